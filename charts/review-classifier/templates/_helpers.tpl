{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "rc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless the release already contains it. */}}
{{- define "rc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "rc.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "rc.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "rc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: serving
app.kubernetes.io/part-of: review-classifier
{{- end }}

{{- define "rc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rc.securityContext" -}}
{{- omit . "enabled" | toYaml }}
{{- end }}

{{/* CPU, memory and (when gpus > 0) nvidia.com/gpu, for requests or limits. */}}
{{- define "rc.resources" -}}
{{- $r := deepCopy .res }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $r "nvidia.com/gpu" (toString .gpus) }}
{{- end }}
{{- toYaml $r }}
{{- end }}

{{/* The predictor's in-cluster V1 predict URL. */}}
{{- define "rc.predictUrl" -}}
http://{{ include "rc.fullname" . }}-predictor.{{ .Release.Namespace }}.svc.cluster.local/v1/models/{{ include "rc.fullname" . }}:predict
{{- end }}

{{/* The capture sink's in-cluster URL: where the payload logger posts with monitoring on. */}}
{{- define "rc.sinkUrl" -}}
http://{{ include "rc.fullname" . }}-capture-sink.{{ .Release.Namespace }}.svc.cluster.local/
{{- end }}

{{/* The payload logger's URL: logger.url, else the capture sink when monitoring is on. */}}
{{- define "rc.loggerUrl" -}}
{{- if .Values.logger.url }}{{ .Values.logger.url }}
{{- else if .Values.monitoring.enabled }}{{ include "rc.sinkUrl" . }}
{{- end }}
{{- end }}

{{- define "rc.monitoringLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: monitoring
app.kubernetes.io/part-of: review-classifier
{{- end }}
