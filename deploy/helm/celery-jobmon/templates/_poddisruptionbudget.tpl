{{/* One exporter's poddisruptionbudget (exporters.yaml renders it for each, with that exporter's values). */}}
{{- define "celery-jobmon.poddisruptionbudget" -}}
{{- if .Values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "celery-jobmon.fullname" . }}
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) }}
  minAvailable: {{ .Values.podDisruptionBudget.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .Values.podDisruptionBudget.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "celery-jobmon.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
