{{/* One exporter's service (exporters.yaml renders it for each, with that exporter's values). */}}
{{- define "celery-jobmon.service" -}}
# The API (and /metrics for anyone): ready pods only, so requests never reach a replica that
# cannot talk to the broker.
apiVersion: v1
kind: Service
metadata:
  name: {{ include "celery-jobmon.fullname" . }}
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "celery-jobmon.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
    {{- with include "celery-jobmon.apiPort" . }}
    # config.apiListen: the action API and the job browser on their own port.
    - name: api
      port: {{ . }}
      targetPort: api
      protocol: TCP
    {{- end }}
---
# What the ServiceMonitor scrapes: every pod, ready or not. An exporter whose broker is down
# answers /readyz 503 and must still be scraped, or celery_jobmon_broker_connected 0 and the
# CeleryJobmonBrokerDisconnected alert would never be seen (the target would just vanish).
apiVersion: v1
kind: Service
metadata:
  name: {{ include "celery-jobmon.fullname" . }}-metrics
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
    app.kubernetes.io/component: metrics
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    {{- include "celery-jobmon.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.port }}
      targetPort: http
      protocol: TCP
{{- end -}}
