{{/* Chart name, possibly overridden. */}}
{{- define "palisade.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name, or <release>-<chart>. */}}
{{- define "palisade.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "palisade.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "palisade.labels" -}}
helm.sh/chart: {{ include "palisade.chart" . }}
app.kubernetes.io/name: {{ include "palisade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: palisade
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "palisade.operator.labels" -}}
{{ include "palisade.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector of the operator pods (stable across upgrades). */}}
{{- define "palisade.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "palisade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "palisade.operator.name" -}}
{{- printf "%s-operator" (include "palisade.fullname" .) }}
{{- end }}

{{- define "palisade.serviceAccountName" -}}
{{- default (include "palisade.operator.name" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "palisade.webhook.serviceName" -}}
{{- printf "%s-webhook" (include "palisade.fullname" .) }}
{{- end }}

{{- define "palisade.webhook.configName" -}}
{{- printf "%s-injector" (include "palisade.fullname" .) }}
{{- end }}

{{- define "palisade.blastRadius.configName" -}}
{{- printf "%s-blast-radius" (include "palisade.fullname" .) }}
{{- end }}

{{- define "palisade.webhook.secretName" -}}
{{- default (printf "%s-webhook-cert" (include "palisade.fullname" .)) .Values.webhook.secretName }}
{{- end }}

{{- define "palisade.bundleSigning.secretName" -}}
{{- printf "%s-bundle-signing" (include "palisade.fullname" .) }}
{{- end }}

{{- define "palisade.collector.serviceName" -}}
{{- printf "%s-collector" (include "palisade.fullname" .) }}
{{- end }}

{{/* The collector address given to injected sidecars: the fixed ClusterIP when set (no DNS
needed; IPv6 in brackets), else the Service's DNS name. */}}
{{- define "palisade.collector.addr" -}}
{{- with .Values.collector.service.clusterIP -}}
{{- if contains ":" . }}[{{ . }}]{{ else }}{{ . }}{{ end -}}
{{- else -}}
{{- include "palisade.collector.serviceName" . }}.{{ .Release.Namespace }}.svc
{{- end -}}
:{{ .Values.collector.port }}
{{- end }}

{{/* repository:tag, or repository@digest. */}}
{{- define "palisade.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The GeoIP volume source of injected sidecars, as JSON: exactly one of the sources. */}}
{{- define "palisade.sidecar.geoipVolume" -}}
{{- $g := .Values.sidecar.geoip }}
{{- $sources := list }}
{{- if $g.configMap }}
{{- /* optional: a namespace without the ConfigMap still runs its pods (no regions). */}}
{{- $sources = append $sources (dict "configMap" (dict "name" $g.configMap "optional" true)) }}
{{- end }}
{{- if $g.existingClaim }}
{{- $sources = append $sources (dict "persistentVolumeClaim" (dict "claimName" $g.existingClaim "readOnly" true)) }}
{{- end }}
{{- if $g.hostPath }}
{{- $sources = append $sources (dict "hostPath" (dict "path" $g.hostPath "type" "Directory")) }}
{{- end }}
{{- if $g.volume }}
{{- $sources = append $sources $g.volume }}
{{- end }}
{{- if ne (len $sources) 1 }}
{{- fail (printf "sidecar.geoip.enabled needs exactly one of sidecar.geoip.configMap, existingClaim, hostPath or volume (%d set)" (len $sources)) }}
{{- end }}
{{- first $sources | toJson }}
{{- end }}
