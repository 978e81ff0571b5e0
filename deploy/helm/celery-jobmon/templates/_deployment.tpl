{{/* One exporter's deployment (exporters.yaml renders it for each, with that exporter's values). */}}
{{- define "celery-jobmon.deployment" -}}
{{- $keys := include "celery-jobmon.secretKeys" . | fromJson -}}
{{- if not (hasKey $keys "brokerUrl") -}}
{{- fail "secrets.brokerUrl (or secrets.existingSecret with existingSecretKeys.brokerUrl) is required: the Celery broker URL" -}}
{{- end -}}
{{- $fileKeys := list -}}
{{- range $value, $_ := include "celery-jobmon.secretFiles" . | fromJson -}}
{{- if hasKey $keys $value -}}{{- $fileKeys = append $fileKeys (get $keys $value) -}}{{- end -}}
{{- end -}}
{{- if and (hasKey $keys "apiToken") .Values.config.apiTokenFile -}}
{{- fail "secrets.apiToken and config.apiTokenFile: give one, not both" -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "celery-jobmon.fullname" . }}
  labels:
    {{- include "celery-jobmon.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      {{- include "celery-jobmon.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "celery-jobmon.selectorLabels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- if not .Values.secrets.existingSecret }}
        # Restart the pods when the credentials change (they are read at start).
        checksum/secret: {{ include "celery-jobmon.secret" . | sha256sum }}
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "celery-jobmon.serviceAccountName" . }}
      automountServiceAccountToken: false
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      containers:
        - name: celery-jobmon
          image: {{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args: [serve]
          env:
            {{- include "celery-jobmon.env" . | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .Values.port }}
              protocol: TCP
            {{- with include "celery-jobmon.apiPort" . }}
            - name: api
              containerPort: {{ . }}
              protocol: TCP
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
              scheme: {{ include "celery-jobmon.scheme" . | upper }}
            {{- toYaml .Values.startupProbe | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
              scheme: {{ include "celery-jobmon.scheme" . | upper }}
            {{- toYaml .Values.livenessProbe | nindent 12 }}
          readinessProbe:
            # 503 while the broker is unreachable: the pod leaves the API Service's endpoints
            # (the metrics Service keeps it, so Prometheus still scrapes it).
            httpGet:
              path: /readyz
              port: http
              scheme: {{ include "celery-jobmon.scheme" . | upper }}
            {{- toYaml .Values.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            # XDG_DATA_HOME: the SQLite history when no history URL is given.
            - name: data
              mountPath: /var/lib/celery-jobmon
            - name: tmp
              mountPath: /tmp
            {{- if $fileKeys }}
            - name: secret-files
              mountPath: /etc/celery-jobmon/secrets
              readOnly: true
            {{- end }}
            {{- if .Values.tls.existingSecret }}
            - name: tls
              mountPath: /etc/celery-jobmon/tls
              readOnly: true
            {{- end }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: data
          emptyDir:
            sizeLimit: {{ .Values.dataVolume.sizeLimit }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $fileKeys }}
        - name: secret-files
          secret:
            secretName: {{ include "celery-jobmon.secretName" . }}
            defaultMode: 0440
            items:
              {{- range $fileKeys }}
              - key: {{ . }}
                path: {{ . }}
              {{- end }}
        {{- end }}
        {{- if .Values.tls.existingSecret }}
        - name: tls
          secret:
            secretName: {{ .Values.tls.existingSecret }}
        {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
