{{/* The chart's name, or nameOverride. */}}
{{- define "celery-jobmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of an exporter's objects: fullnameOverride, else RELEASE-celery-jobmon (RELEASE alone
     when it already holds the chart's name); followed by -NAME for an entry of `clusters`. */}}
{{- define "celery-jobmon.fullname" -}}
{{- $base := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $base = .Values.fullnameOverride -}}
{{- else -}}
{{- $name := include "celery-jobmon.name" . -}}
{{- if contains $name .Release.Name -}}
{{- $base = .Release.Name -}}
{{- else -}}
{{- $base = printf "%s-%s" .Release.Name $name -}}
{{- end -}}
{{- end -}}
{{- if .instance -}}
{{- $base = printf "%s-%s" ($base | trunc (int (sub 62 (len .instance)))) .instance -}}
{{- end -}}
{{- $base | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the release's shared objects (PrometheusRule, dashboards): the fullname without
     the cluster. */}}
{{- define "celery-jobmon.releaseName" -}}
{{- include "celery-jobmon.fullname" (dict "Values" .Values "Release" .Release "Chart" .Chart) -}}
{{- end -}}

{{/* Labels that select the exporter's pods. */}}
{{- define "celery-jobmon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celery-jobmon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- with .instance }}
celery-jobmon/cluster: {{ . }}
{{- end }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "celery-jobmon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "celery-jobmon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret holding the credentials: existingSecret, or the chart's own. */}}
{{- define "celery-jobmon.secretName" -}}
{{- default (include "celery-jobmon.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Secret entries as {value name: key in the Secret}: the keys of existingSecret that are
     named, or the chart's Secret's entries whose value is set. brokerUrl is always there. */}}
{{- define "celery-jobmon.secretKeys" -}}
{{- $keys := dict -}}
{{- $own := dict "brokerUrl" "broker-url" "apiToken" "api-token" "historyUrl" "history-url" "resultBackend" "result-backend" "rabbitmqManagementUrl" "rabbitmq-management-url" "uiUsers" "ui-users" "uiSessionSecret" "ui-session-secret" "redbeatUrl" "redbeat-url" "djangoBeatUrl" "django-beat-url" -}}
{{- range $value, $key := $own -}}
{{- if $.Values.secrets.existingSecret -}}
{{- $named := index $.Values.secrets.existingSecretKeys $value -}}
{{- if $named -}}{{- $_ := set $keys $value $named -}}{{- end -}}
{{- else if index $.Values.secrets $value -}}
{{- $_ := set $keys $value $key -}}
{{- end -}}
{{- end -}}
{{- toJson $keys -}}
{{- end -}}

{{/* Secret entries the exporter reads as files (mounted under /etc/celery-jobmon/secrets/):
     {value name: the option whose JOBMON_* variable holds the path}. The others are
     environment variables named after the value (brokerUrl: JOBMON_BROKER_URL). */}}
{{- define "celery-jobmon.secretFiles" -}}
{{- toJson (dict "uiUsers" "uiUsersFile" "uiSessionSecret" "uiSessionSecretFile") -}}
{{- end -}}

{{/* The service account the pods run as. */}}
{{- define "celery-jobmon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "celery-jobmon.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* http, or https with tls.existingSecret. */}}
{{- define "celery-jobmon.scheme" -}}
{{- if .Values.tls.existingSecret -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* The port of config.apiListen when the action API and the UI listen on their own address
     reachable from outside the pod (not loopback): the container and the API Service expose
     it as "api". Empty otherwise. */}}
{{- define "celery-jobmon.apiPort" -}}
{{- with .Values.config.apiListen -}}
{{- $host := regexReplaceAll ":[0-9]+$" . "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if not (has $host (list "127.0.0.1" "localhost" "::1")) -}}
{{- regexFind "[0-9]+$" . -}}
{{- end -}}
{{- end -}}
{{- end -}}
