{{/* Names and labels. */}}
{{- define "aiq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aiq.fullname" -}}
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

{{- define "aiq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aiq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aiq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aiq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "aiq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aiq.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aiq.statefulset" -}}
{{- if eq .Values.workload.kind "StatefulSet" -}}true{{- else if eq .Values.workload.kind "Deployment" -}}{{- else -}}
{{- fail (printf "workload.kind must be StatefulSet or Deployment, not %q" .Values.workload.kind) -}}
{{- end -}}
{{- end -}}

{{/*
Seconds Kubernetes waits between the preStop hook and SIGKILL: the worker's drain
(worker.drain_timeout_ms, rounded up) plus the preStop sleep plus a margin for the final
flush, commit and LeaveGroup.
*/}}
{{- define "aiq.terminationGracePeriodSeconds" -}}
{{- $drainS := div (add (int64 .Values.drain.timeoutMs) 999) 1000 -}}
{{- add $drainS (int64 .Values.drain.preStopSleepSeconds) (int64 .Values.drain.marginSeconds) -}}
{{- end -}}

{{/* KEDA's name for the SASL mechanism. */}}
{{- define "aiq.kedaSasl" -}}
{{- $m := .Values.kafka.sasl.mechanism -}}
{{- if eq $m "PLAIN" -}}plaintext
{{- else if eq $m "SCRAM-SHA-256" -}}scram_sha256
{{- else if eq $m "SCRAM-SHA-512" -}}scram_sha512
{{- else -}}{{- fail (printf "kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, not %q" $m) -}}
{{- end -}}
{{- end -}}

{{- define "aiq.kafkaTls" -}}
{{- if or .Values.keda.tls (and .Values.kafka.sasl.enabled (eq .Values.kafka.sasl.securityProtocol "SASL_SSL")) -}}enable{{- else -}}disable{{- end -}}
{{- end -}}

{{- define "aiq.autoscaled" -}}
{{- if or .Values.autoscaling.enabled .Values.keda.enabled -}}true{{- end -}}
{{- end -}}
