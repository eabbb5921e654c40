{{/* The chart's name, or nameOverride. */}}
{{- define "site-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: fullnameOverride, else the release name when it
already contains the chart's name, else <release>-<chart>. Every object is
named from it; with the release name site-operator the names are the same
as the kustomize install's (site-operator-manager, ...).
*/}}
{{- define "site-operator.fullname" -}}
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

{{/* chart: <name>-<version>, for the helm.sh/chart label. */}}
{{- define "site-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "site-operator.labels" -}}
helm.sh/chart: {{ include "site-operator.chart" . }}
{{ include "site-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the manager's pods; never change them in an upgrade. */}}
{{- define "site-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "site-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{/* The manager's ServiceAccount. */}}
{{- define "site-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "site-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "site-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
The site services' image (--service-image): siteServices.image, each part
defaulting to the manager's.
*/}}
{{- define "site-operator.serviceImage" -}}
{{- $img := .Values.siteServices.image }}
{{- $repo := default .Values.image.repository $img.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag | toString) ($img.tag | toString) }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* The site services' pull policy (--service-image-pull-policy). */}}
{{- define "site-operator.serviceImagePullPolicy" -}}
{{- default .Values.image.pullPolicy .Values.siteServices.image.pullPolicy }}
{{- end }}

{{/* Labels that select the pods of the site services of a component ($component). */}}
{{- define "site-operator.siteServiceSelector" -}}
app.kubernetes.io/name: site-operator
app.kubernetes.io/managed-by: site-operator
app.kubernetes.io/component: {{ . }}
{{- end }}
