{{/* One exporter's networkpolicy (exporters.yaml renders it for each, with that exporter's values). */}}
{{- define "celery-jobmon.networkpolicy" -}}
{{- if .Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "celery-jobmon.fullname" . }}
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "celery-jobmon.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if .Values.networkPolicy.restrictEgress }}
    - Egress
    {{- end }}
  ingress:
    - ports:
        - port: http
          protocol: TCP
        {{- if include "celery-jobmon.apiPort" . }}
        - port: api
          protocol: TCP
        {{- end }}
      {{- with .Values.networkPolicy.ingressFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- if .Values.networkPolicy.restrictEgress }}
  egress:
    # DNS, to resolve the broker's and the database's names.
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- with .Values.networkPolicy.egress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
