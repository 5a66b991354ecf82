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

{{/* The gateway's image; the RayCluster's pods run it too (every Ray node runs the trainer). */}}
{{- define "tuneloop.gateway.image" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (toString .Values.gateway.image.tag) -}}
{{- end -}}

{{/* The RayCluster: KubeRay refuses names over 53 characters (its Services append up to
"-serve-svc") and names that are not DNS-1035 labels. */}}
{{- define "tuneloop.ray.name" -}}
{{- $name := printf "%s-ray" (include "tuneloop.fullname" . | trunc 49 | trimSuffix "-") -}}
{{- if not (regexMatch "^[a-z]" $name) -}}
{{- fail (printf "ray.enabled: the RayCluster name %q must start with a letter (set fullnameOverride)" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* KubeRay names the head's Service <RayCluster name>-head-svc. */}}
{{- define "tuneloop.ray.headService" -}}{{ include "tuneloop.ray.name" . }}-head-svc{{- end -}}

{{/* TUNELOOP_RAY_ADDRESS: Ray Client on the head (the gateway pods are not Ray nodes). */}}
{{- define "tuneloop.ray.address" -}}
{{- printf "ray://%s:10001" (include "tuneloop.ray.headService" .) -}}
{{- end -}}

{{/* Labels of the Ray pods: not app.kubernetes.io/name, which KubeRay sets (to "kuberay") and
older operators rely on to find the head's Service. */}}
{{- define "tuneloop.ray.podLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/part-of: {{ include "tuneloop.name" $root }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
{{- end -}}

{{/* The pod and container securityContext of every tuneloop container (the image's user). */}}
{{- define "tuneloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001  # the image's tuneloop user
runAsGroup: 10001
fsGroup: 10001  # so the shared volumes are writable
{{- end -}}

{{- define "tuneloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

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
