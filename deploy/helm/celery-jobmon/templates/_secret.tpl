{{/* One exporter's secret (exporters.yaml renders it for each, with that exporter's values). */}}
{{- define "celery-jobmon.secret" -}}
{{- if not .Values.secrets.existingSecret }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "celery-jobmon.fullname" . }}
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
type: Opaque
stringData:
  {{- range $value, $key := include "celery-jobmon.secretKeys" . | fromJson }}
  {{ $key }}: {{ index $.Values.secrets $value | quote }}
  {{- end }}
{{- end }}
{{- end -}}
