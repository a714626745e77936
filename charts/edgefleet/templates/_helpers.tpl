{{/* Object names and labels shared by every template. */}}

{{- define "edgefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgefleet.fullname" -}}
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

{{- define "edgefleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "edgefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgefleet
{{- end }}

{{/* Selector labels of one component: include "edgefleet.selector" (list . "bridge") */}}
{{- define "edgefleet.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "edgefleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "edgefleet.broker.fullname" -}}
{{- printf "%s-broker" (include "edgefleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgefleet.bridge.fullname" -}}
{{- printf "%s-bridge" (include "edgefleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgefleet.bridge.serviceAccountName" -}}
{{- if .Values.bridge.serviceAccount.create }}
{{- default (include "edgefleet.bridge.fullname" .) .Values.bridge.serviceAccount.name }}
{{- else }}
{{- required "bridge.serviceAccount.name is required when bridge.serviceAccount.create is false" .Values.bridge.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The MQTT account the bridge uses on the chart's broker (the ACL in files/mosquitto/acl.conf names it). */}}
{{- define "edgefleet.bridge.mqttUser" -}}edgefleet-bridge{{- end }}

{{/* The URL the bridge connects to: the chart's broker (in-cluster, plain 1883) or bridge.broker.url. */}}
{{- define "edgefleet.bridge.brokerURL" -}}
{{- if .Values.bridge.broker.url }}
{{- .Values.bridge.broker.url }}
{{- else if .Values.broker.enabled }}
{{- printf "mqtt://%s@%s.%s.svc:1883" (include "edgefleet.bridge.mqttUser" .) (include "edgefleet.broker.fullname" .) .Release.Namespace }}
{{- else }}
{{- fail "broker.enabled is false: set bridge.broker.url to your MQTT broker (mqtt://user@host:1883 or mqtts://...)" }}
{{- end }}
{{- end }}

{{/* Secret name + key holding the bridge's broker password, or empty. */}}
{{- define "edgefleet.bridge.passwordSecretName" -}}
{{- if .Values.bridge.broker.url }}
{{- .Values.bridge.broker.passwordSecret.name }}
{{- else }}
{{- printf "%s-auth" (include "edgefleet.broker.fullname" .) }}
{{- end }}
{{- end }}

{{- define "edgefleet.bridge.passwordSecretKey" -}}
{{- if .Values.bridge.broker.url }}
{{- .Values.bridge.broker.passwordSecret.key }}
{{- else -}}
bridge-password
{{- end }}
{{- end }}

{{/* The broker port devices connect to. */}}
{{- define "edgefleet.broker.devicePort" -}}
{{- if .Values.broker.service.port }}
{{- .Values.broker.service.port }}
{{- else if .Values.broker.tls.enabled -}}
8883
{{- else -}}
1883
{{- end }}
{{- end }}

{{- define "edgefleet.broker.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "edgefleet.broker.fullname" .)) .Values.broker.tls.existingSecret }}
{{- end }}

{{- define "edgefleet.bridge.tlsSecretName" -}}
{{- default (printf "%s-kubelet-tls" (include "edgefleet.bridge.fullname" .)) .Values.bridge.kubelet.tls.existingSecret }}
{{- end }}

{{- define "edgefleet.bridge.kubeletAddress" -}}
{{- default .Values.bridge.kubelet.service.clusterIP .Values.bridge.kubelet.address }}
{{- end }}

{{/* Namespace of the host-<device> pods (--host-namespace): the release's unless set. */}}
{{- define "edgefleet.bridge.hostNamespace" -}}
{{- default .Release.Namespace .Values.bridge.hostNamespace }}
{{- end }}
