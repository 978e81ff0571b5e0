{{/* One value of `config` as its JOBMON_* variable expects it: a whole number without
     exponent (YAML numbers reach templates as floats), a list joined with `sep`. */}}
{{- define "celery-jobmon.envValue" -}}
{{- $v := .value -}}
{{- if kindIs "slice" $v -}}
{{- $parts := list -}}
{{- range $v -}}{{- $parts = append $parts (include "celery-jobmon.envValue" (dict "value" . "sep" "")) -}}{{- end -}}
{{- join $.sep $parts -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (float64 (int64 $v)) -}}{{- printf "%d" (int64 $v) -}}{{- else -}}{{- printf "%v" $v -}}{{- end -}}
{{- else -}}
{{- toString $v -}}
{{- end -}}
{{- end -}}

{{/* The container's environment: every `config` value that is set, the Secret's entries, the
     listen address, TLS files, the SQLite location. */}}
{{- define "celery-jobmon.env" -}}
- name: JOBMON_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.port) | quote }}
- name: XDG_DATA_HOME
  value: /var/lib/celery-jobmon
{{- $lists := dict "runtimeBuckets" "," "queueWaitBuckets" "," -}}
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "slice" $value) (empty $value))) }}
- name: {{ printf "JOBMON_%s" (snakecase $key | upper) }}
  value: {{ include "celery-jobmon.envValue" (dict "value" $value "sep" (get $lists $key | default " ")) | quote }}
{{- end }}
{{- end }}
{{- $files := include "celery-jobmon.secretFiles" . | fromJson }}
{{- range $value, $key := include "celery-jobmon.secretKeys" . | fromJson }}
{{- if hasKey $files $value }}
- name: {{ printf "JOBMON_%s" (snakecase (get $files $value) | upper) }}
  value: {{ printf "/etc/celery-jobmon/secrets/%s" $key | quote }}
{{- else }}
- name: {{ printf "JOBMON_%s" (snakecase $value | upper) }}
  valueFrom:
    secretKeyRef:
      name: {{ include "celery-jobmon.secretName" $ }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: JOBMON_TLS_CERT
  value: /etc/celery-jobmon/tls/tls.crt
- name: JOBMON_TLS_KEY
  value: /etc/celery-jobmon/tls/tls.key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
