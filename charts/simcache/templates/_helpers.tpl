{{/* The chart's name, overridable. */}}
{{- define "simcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name of the operator's objects. */}}
{{- define "simcache.fullname" -}}
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

{{- define "simcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "simcache.labels" -}}
helm.sh/chart: {{ include "simcache.chart" . }}
{{ include "simcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: simcache
{{- end }}

{{/* What the Deployment, Service and PDB select the operator pods by. */}}
{{- define "simcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "simcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "simcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "simcache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest. */}}
{{- define "simcache.image" -}}
{{- $img := index . 0 }}{{- $ctx := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $ctx.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "simcache.postgresqlName" -}}
{{- printf "%s-postgresql" (include "simcache.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The trial database's Secret (keys password and url). */}}
{{- define "simcache.trialDbSecret" -}}
{{- .Values.postgresql.existingSecret | default (include "simcache.postgresqlName" .) }}
{{- end }}

{{/* The Secret and key holding the database URL. */}}
{{- define "simcache.databaseSecret" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.postgresql.enabled }}
{{- include "simcache.trialDbSecret" . }}
{{- else }}
{{- fail "set database.existingSecret (a Secret with the PostgreSQL URL) or postgresql.enabled=true for a trial database" }}
{{- end }}
{{- end }}

{{- define "simcache.databaseKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.urlKey }}
{{- else }}
{{- print "url" }}
{{- end }}
{{- end }}

{{- define "simcache.runsClaim" -}}
{{- default (printf "%s-runs" (include "simcache.fullname" .)) .Values.runStorage.existingClaim }}
{{- end }}

{{/* The operator's in-cluster URL, as simulation pods reach it. */}}
{{- define "simcache.operatorURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "simcache.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{/* Selects the simulation pods the operator creates (for the PodMonitor). */}}
{{- define "simcache.runPodSelector" -}}
app.kubernetes.io/managed-by: simcache-operator
app.kubernetes.io/name: simcache-run
{{- end }}

{{/* A map of node labels as --pod-node-selector wants it: k=v,k2=v2. */}}
{{- define "simcache.nodeSelectorFlag" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The namespaces the operator watches, comma-separated (empty: all):
operator.watchNamespaces plus the older single operator.watchNamespace.
*/}}
{{- define "simcache.watchNamespaces" -}}
{{- $ns := list -}}
{{- with .Values.operator.watchNamespace }}{{ $ns = append $ns . }}{{ end -}}
{{- range .Values.operator.watchNamespaces }}{{ $ns = append $ns . }}{{ end -}}
{{- $ns | uniq | join "," -}}
{{- end }}

{{/*
The shared tier's URL as run pods reach it (any namespace: the Service's
cluster DNS name).
*/}}
{{- define "simcache.sharedTierUrl" -}}
http://{{ include "simcache.fullname" . }}-shared.{{ .Release.Namespace }}.svc:8300
{{- end }}
