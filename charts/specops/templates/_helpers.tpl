{{/* Names and labels shared by every template. */}}

{{- define "specops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "specops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "specops.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "specops.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Never app.kubernetes.io/managed-by=specops: the operator watches Deployments with that label. */}}
{{- define "specops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "specops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "specops.labels" -}}
{{ include "specops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: specops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "specops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "specops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "specops.webhookService" -}}
{{- printf "%s-webhook" (include "specops.fullname" .) -}}
{{- end -}}

{{- define "specops.metricsService" -}}
{{- printf "%s-metrics" (include "specops.fullname" .) -}}
{{- end -}}

{{- define "specops.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "specops.fullname" .) -}}
{{- end -}}

{{- define "specops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The webhook configuration's name is fixed in the operator (OperatorOptions.webhook_config_name). */}}
{{- define "specops.webhookConfigName" -}}
specops.dev
{{- end -}}

{{/* The operator's webhook certificate comes from a mounted Secret: cert-manager's, or the one the
chart generates so that several replicas serve the same certificate. */}}
{{- define "specops.sharedCert" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) (gt (int .Values.replicaCount) 1) -}}
true
{{- end -}}
{{- end -}}

{{- define "specops.mountCert" -}}
{{- if and .Values.webhook.enabled (or .Values.webhook.certManager.enabled (include "specops.sharedCert" .)) -}}
true
{{- end -}}
{{- end -}}

{{/* PodDisruptionBudget: policy/v1 where the cluster serves it (Kubernetes 1.21+), else v1beta1. */}}
{{- define "specops.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{- define "specops.leaseName" -}}
{{- include "specops.fullname" . -}}
{{- end -}}
