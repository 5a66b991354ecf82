{{/* Names and labels. */}}
{{- define "tuneloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tuneloop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tuneloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "tuneloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "tuneloop.selectorLabels" (list . "vllm") */}}
{{- define "tuneloop.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "tuneloop.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tuneloop.vllm.name" -}}{{ include "tuneloop.fullname" . }}-vllm{{- end -}}
{{- define "tuneloop.vllm.headless" -}}{{ include "tuneloop.fullname" . }}-vllm-headless{{- end -}}
{{- define "tuneloop.gateway.name" -}}{{ include "tuneloop.fullname" . }}-gateway{{- end -}}

{{/* TUNELOOP_UPSTREAMS: every vLLM replica by its StatefulSet pod DNS name. */}}
{{- define "tuneloop.upstreams" -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.vllm.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:%d" (include "tuneloop.vllm.name" $) $i (include "tuneloop.vllm.headless" $) $.Release.Namespace $.Values.clusterDomain (int $.Values.vllm.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{- define "tuneloop.secretName" -}}
{{- .Values.secret.existingSecret | default (include "tuneloop.fullname" .) -}}
{{- end -}}

{{- define "tuneloop.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "tuneloop.fullname" .)) -}}
{{- end -}}

{{- define "tuneloop.adaptersClaim" -}}
{{- .Values.persistence.adapters.existingClaim | default (printf "%s-adapters" (include "tuneloop.fullname" .)) -}}
{{- end -}}

{{- define "tuneloop.dataClaim" -}}
{{- .Values.persistence.data.existingClaim | default (printf "%s-data" (include "tuneloop.fullname" .)) -}}
{{- end -}}

{{- define "tuneloop.modelClaim" -}}
{{- required "model.existingClaim: name the PersistentVolumeClaim that holds the base model" .Values.model.existingClaim -}}
{{- end -}}
