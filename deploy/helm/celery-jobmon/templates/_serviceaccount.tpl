{{/* One exporter's serviceaccount (exporters.yaml renders it for each, with that exporter's values). */}}
{{- define "celery-jobmon.serviceaccount" -}}
{{- if .Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "celery-jobmon.serviceAccountName" . }}
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The exporter never calls the Kubernetes API.
automountServiceAccountToken: false
{{- end }}
{{- end -}}
