{{/*
Facts about the service the chart must agree with. They mirror service/settings.py
(GRPC_SERVICE_NAME, Settings fields) and tests/integration/test_helm.py checks they still do.
*/}}
{{- define "newstagger.grpcServiceName" -}}
newstagger.v1.TaggerService
{{- end -}}

{{/* Chart name, truncated to a DNS label. */}}
{{- define "newstagger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name; components append a suffix via newstagger.componentName. */}}
{{- define "newstagger.fullname" -}}
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

{{/* "<fullname>-<suffix>" within 63 characters. Call with (dict "root" $ "suffix" "server"). */}}
{{- define "newstagger.componentName" -}}
{{- printf "%s-%s" (include "newstagger.fullname" .root | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{/* The headless Service of the workers' metrics port; the Prometheus Operator names its scrape job after it. */}}
{{- define "newstagger.workerMetricsName" -}}
{{- include "newstagger.componentName" (dict "root" . "suffix" "worker-metrics") -}}
{{- end -}}

{{- define "newstagger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the release's pods (all components). */}}
{{- define "newstagger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "newstagger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels that select one component's pods. Call with (dict "root" $ "component" "server"). */}}
{{- define "newstagger.componentSelectorLabels" -}}
{{ include "newstagger.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "newstagger.labels" -}}
helm.sh/chart: {{ include "newstagger.chart" . }}
{{ include "newstagger.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: newstagger
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels on one component's objects. Call with (dict "root" $ "component" "server"). */}}
{{- define "newstagger.componentLabels" -}}
{{ include "newstagger.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "newstagger.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "newstagger.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "newstagger.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the claim holding the model registry. */}}
{{- define "newstagger.modelClaimName" -}}
{{- default (include "newstagger.componentName" (dict "root" . "suffix" "models")) .Values.models.existingClaim -}}
{{- end -}}

{{/* "true" when Kafka uses SASL / TLS. */}}
{{- define "newstagger.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}
{{- define "newstagger.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}
{{/* "true" when a Kafka TLS Secret is mounted. */}}
{{- define "newstagger.kafkaTlsSecret" -}}
{{- if and (include "newstagger.kafkaTls" .) .Values.kafka.tls.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Highest worker replica count an autoscaler may reach: the configured maximum, 0 = kafka.partitions. */}}
{{- define "newstagger.workerMaxReplicas" -}}
{{- if .Values.worker.keda.enabled -}}
{{- int (default .Values.kafka.partitions .Values.worker.keda.maxReplicaCount) -}}
{{- else -}}
{{- int (default .Values.kafka.partitions .Values.worker.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}

{{/* Seconds Kubernetes waits after SIGTERM: preStop sleep + the service's grace period + a buffer. */}}
{{- define "newstagger.terminationGracePeriodSeconds" -}}
{{- $grace := ceil .root.Values.config.graceSeconds | int -}}
{{- add $grace (int .root.Values.config.terminationGraceBufferSeconds) (int .preStop) -}}
{{- end -}}

{{/* Pod-level fields shared by every pod of the release. */}}
{{- define "newstagger.podCommon" -}}
serviceAccountName: {{ include "newstagger.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Volumes shared by every pod: the writable /tmp and the model registry. */}}
{{- define "newstagger.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "newstagger.modelClaimName" . }}
{{- end -}}

{{/* Volume mounts shared by every container. Call with (dict "root" $ "modelsReadOnly" true). */}}
{{- define "newstagger.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: models
  mountPath: {{ .root.Values.models.mountPath }}
  readOnly: {{ .modelsReadOnly }}
{{- end -}}

{{/* Probe timing fields. Call with a probe values map. */}}
{{- define "newstagger.probeTiming" -}}
periodSeconds: {{ .periodSeconds }}
failureThreshold: {{ .failureThreshold }}
timeoutSeconds: {{ .timeoutSeconds }}
{{- end -}}
