{{/*
Standard name and label helpers.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "carbonshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else the release name, followed by the chart name
unless the release name already contains it. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "carbonshift.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart name and version, for the helm.sh/chart label. */}}
{{- define "carbonshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "carbonshift.labels" -}}
helm.sh/chart: {{ include "carbonshift.chart" . }}
{{ include "carbonshift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: carbonshift
{{- end }}

{{/* Labels that select the operator pods (immutable once installed). */}}
{{- define "carbonshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carbonshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "carbonshift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "carbonshift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, else repository:tag (tag defaults to the appVersion). */}}
{{- define "carbonshift.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the metrics Service; also the `job` label a ServiceMonitor gives its targets. */}}
{{- define "carbonshift.metricsServiceName" -}}
{{- printf "%s-metrics" (include "carbonshift.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the provider Secret is mounted. */}}
{{- define "carbonshift.providerSecretDir" -}}
/var/run/secrets/carbonshift/providers
{{- end }}

{{/* The webhook's Service, TLS Secret and ValidatingWebhookConfiguration. */}}
{{- define "carbonshift.webhookServiceName" -}}
{{- printf "%s-webhook" (include "carbonshift.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "carbonshift.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "carbonshift.fullname" .)) .Values.webhook.tls.secretName }}
{{- end }}

{{- define "carbonshift.webhookConfigurationName" -}}
{{- default (printf "%s.carbonshift.io" (include "carbonshift.fullname" .)) .Values.webhook.configurationName }}
{{- end }}
