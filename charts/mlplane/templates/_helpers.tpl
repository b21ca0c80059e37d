{{/*
Names. Kubernetes names and label values are at most 63 characters; the full name is cut to 63
and the longest suffix used here ("-mlflow-artifacts", 17 characters) is added to it, so keep the
full name (the release name when it contains "mlplane", else "<release>-mlplane", or
fullnameOverride) to 46 characters or fewer; longer names fail with a clear message rather than
being cut into clashes. Service names are DNS-1035 labels (63 characters): the same budget applies.
*/}}
{{- define "mlplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlplane.fullname" -}}
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

{{/* "<fullname>-<suffix>", failing instead of producing an invalid name. */}}
{{- define "mlplane.componentName" -}}
{{- $name := printf "%s-%s" (include "mlplane.fullname" .root) .suffix }}
{{- if gt (len $name) 63 }}
{{- fail (printf "resource name %q is longer than 63 characters: shorten the release name or set fullnameOverride" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "mlplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "operator"). Immutable on Deployments. */}}
{{- define "mlplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlplane.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "operator"). */}}
{{- define "mlplane.labels" -}}
helm.sh/chart: {{ include "mlplane.chart" .root }}
{{ include "mlplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mlplane
{{- end }}

{{- define "mlplane.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "mlplane.mlflowImage" -}}
{{- printf "%s:%s" .Values.mlflow.image.repository (default .Chart.AppVersion .Values.mlflow.image.tag) }}
{{- end }}

{{/* The MLflow tracking URI inside the cluster. */}}
{{- define "mlplane.mlflowUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "mlplane.componentName" (dict "root" . "suffix" "mlflow")) .Release.Namespace .Values.mlflow.port }}
{{- end }}

{{/* Host headers MLflow answers: its Service's DNS names (with and without the port), localhost
(kubectl port-forward), private IPs (MLflow's defaults, which an explicit list replaces) and the
values' extra hosts. Comma-joined for --allowed-hosts. */}}
{{- define "mlplane.mlflowAllowedHosts" -}}
{{- $svc := include "mlplane.componentName" (dict "root" . "suffix" "mlflow") }}
{{- $ns := .Release.Namespace }}
{{- $port := .Values.mlflow.port }}
{{- $hosts := list }}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $hosts = append $hosts $name }}
{{- $hosts = append $hosts (printf "%s:%v" $name $port) }}
{{- end }}
{{- $hosts = concat $hosts (list "localhost" "127.0.0.1" "[::1]" "0.0.0.0" "localhost:*" "127.0.0.1:*" "[[]::1]:*" "0.0.0.0:*" "192.168.*" "10.*") }}
{{- range $i := until 16 }}
{{- $hosts = append $hosts (printf "172.%d.*" (add $i 16)) }}
{{- end }}
{{- $hosts = concat $hosts (list "fc00:*" "fd00:*") .Values.mlflow.allowedHosts }}
{{- join "," $hosts }}
{{- end }}

{{/* Origins allowed to change state through MLflow's API from a browser (the UI behind an ingress). */}}
{{- define "mlplane.mlflowCorsOrigins" -}}
{{- $origins := list }}
{{- range $h := .Values.mlflow.allowedHosts }}
{{- $origins = append $origins (printf "https://%s" $h) }}
{{- end }}
{{- join "," (concat $origins .Values.mlflow.corsAllowedOrigins) }}
{{- end }}

{{/* The model servers' service account: serving.serviceAccount.name, else the release Platform's
spec.serving.serviceAccountName (platform.serving.serviceAccountName), else the Platform default
`mlplane-model-server` — so the Platform the chart installs names an account the chart creates. */}}
{{- define "mlplane.modelServerServiceAccount" -}}
{{- $platform := dig "serving" "serviceAccountName" "" (.Values.platform | default dict) }}
{{- .Values.serving.serviceAccount.name | default $platform | default "mlplane-model-server" }}
{{- end }}

{{/* Namespaces that get the model servers' service account: the release's, then serving.namespaces (JSON list). */}}
{{- define "mlplane.servingNamespaces" -}}
{{- concat (list .Release.Namespace) .Values.serving.namespaces | uniq | toJson }}
{{- end }}

{{/* MLflow's users (mlflow.auth): the existing Secret, else the one the chart makes from values. */}}
{{- define "mlplane.mlflowAuthSecretName" -}}
{{- default (include "mlplane.componentName" (dict "root" . "suffix" "mlflow-auth")) .Values.mlflow.auth.existingSecret }}
{{- end }}

{{/* The Secret the model servers' service account carries for KServe's storage initializer: its
`https-host` is the host of the chart's MLflow URL (the host of every proxied storageUri), its `headers`
the reader's basic-auth header; KServe turns it into the `<host>-headers` variable kserve_storage reads. */}}
{{- define "mlplane.mlflowStorageSecretName" -}}
{{- include "mlplane.componentName" (dict "root" . "suffix" "mlflow-storage") }}
{{- end }}

{{/* The MLflow users of the pods mlplane renders (mlflow.auth), one Secret each (type kubernetes.io/basic-auth,
keys `username`, `password`) in every serving namespace: the reader for RayService pods, the writer for
ingestion Jobs. The release Platform names them in spec.tracking.credentials. */}}
{{- define "mlplane.mlflowReaderSecretName" -}}
{{- include "mlplane.componentName" (dict "root" . "suffix" "mlflow-reader") }}
{{- end }}

{{- define "mlplane.mlflowWriterSecretName" -}}
{{- include "mlplane.componentName" (dict "root" . "suffix" "mlflow-writer") }}
{{- end }}

{{/* The release Platform's spec (JSON): the `platform:` value, plus, with mlflow.auth on and the chart's MLflow
as tracking server (tracking.mode not external), spec.tracking.credentials naming the reader and writer
Secrets — unless the value sets tracking.credentials itself. */}}
{{- define "mlplane.platformSpec" -}}
{{- $spec := deepCopy (.Values.platform | default dict) }}
{{- $tracking := get $spec "tracking" | default dict }}
{{- if and .Values.mlflow.auth.enabled (ne (get $tracking "mode" | default "embedded") "external") (not (hasKey $tracking "credentials")) }}
{{- $keys := dict "usernameKey" "username" "passwordKey" "password" }}
{{- $reader := merge (dict "secret" (include "mlplane.mlflowReaderSecretName" .)) $keys }}
{{- $writer := merge (dict "secret" (include "mlplane.mlflowWriterSecretName" .)) (deepCopy $keys) }}
{{- $_ := set $tracking "credentials" (dict "reader" $reader "writer" $writer) }}
{{- $_ = set $spec "tracking" $tracking }}
{{- end }}
{{- toJson $spec }}
{{- end }}

{{- define "mlplane.mlflowHost" -}}
{{- printf "%s.%s.svc" (include "mlplane.componentName" (dict "root" . "suffix" "mlflow")) .Release.Namespace }}
{{- end }}

{{- define "mlplane.dbSecretName" -}}
{{- default (include "mlplane.componentName" (dict "root" . "suffix" "mlflow-db")) .Values.mlflow.backendStore.existingSecret }}
{{- end }}

{{/* Pod-level security context shared by every pod. */}}
{{- define "mlplane.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context shared by every container. */}}
{{- define "mlplane.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Fail early on invalid combinations of values. */}}
{{- define "mlplane.validate" -}}
{{- $b := .Values.mlflow.backendStore }}
{{- if and (eq $b.type "postgresql") (not $b.host) }}
{{- fail "mlflow.backendStore.host is required when mlflow.backendStore.type is postgresql" }}
{{- end }}
{{- $sa := .Values.serving.serviceAccount.name }}
{{- $platformSa := dig "serving" "serviceAccountName" "mlplane-model-server" (.Values.platform | default dict) }}
{{- if and $sa (ne $sa $platformSa) }}
{{- fail (printf "platform.serving.serviceAccountName is %s but the chart creates the model servers' service account %s (serving.serviceAccount.name): model servers would run under an account that does not exist; set platform.serving.serviceAccountName: %s, or leave serving.serviceAccount.name empty" $platformSa $sa $sa) }}
{{- end }}
{{- if and $b.password $b.existingSecret }}
{{- fail "mlflow.backendStore.password and mlflow.backendStore.existingSecret are both set: keep one (the chart creates a Secret from password only when existingSecret is empty)" }}
{{- end }}
{{- if and $b.password (ne $b.type "postgresql") }}
{{- fail "mlflow.backendStore.password is set but mlflow.backendStore.type is not postgresql: remove it or set type: postgresql" }}
{{- end }}
{{- if and (eq $b.type "sqlite") (gt (int .Values.mlflow.replicas) 1) }}
{{- fail "mlflow.replicas > 1 needs mlflow.backendStore.type: postgresql (sqlite on a PVC is single-writer)" }}
{{- end }}
{{- $a := .Values.mlflow.artifactStore }}
{{- if and (has $a.type (list "s3" "gcs")) (not $a.bucket) }}
{{- fail (printf "mlflow.artifactStore.bucket is required when mlflow.artifactStore.type is %s" $a.type) }}
{{- end }}
{{- $auth := .Values.mlflow.auth }}
{{- if and $auth.enabled (not $auth.existingSecret) (not $auth.adminPassword) }}
{{- fail "mlflow.auth.enabled needs the admin's password: set mlflow.auth.adminPassword (12 characters or more) or mlflow.auth.existingSecret (a Secret with keys admin-username, admin-password)" }}
{{- end }}
{{- if and $auth.enabled (not $auth.existingSecret) (not $auth.readerPassword) }}
{{- fail "mlflow.auth.enabled needs the reader's password (KServe's storage initializer and the RayService pods read models from MLflow as the reader): set mlflow.auth.readerPassword (12 characters or more), or mlflow.auth.existingSecret" }}
{{- end }}
{{- if and $auth.enabled (not $auth.existingSecret) (not $auth.writerPassword) }}
{{- fail "mlflow.auth.enabled needs the writer's password (ingestion Jobs log their runs as the writer; the admin's password never leaves the release namespace): set mlflow.auth.writerPassword (12 characters or more), or mlflow.auth.existingSecret" }}
{{- end }}
{{- if and $auth.enabled (not $auth.existingSecret) (eq $auth.adminUsername $auth.readerUsername) }}
{{- fail "mlflow.auth.readerUsername must differ from mlflow.auth.adminUsername" }}
{{- end }}
{{- if and $auth.enabled (not $auth.existingSecret) (has $auth.writerUsername (list $auth.adminUsername $auth.readerUsername)) }}
{{- fail "mlflow.auth.writerUsername must differ from mlflow.auth.adminUsername and mlflow.auth.readerUsername" }}
{{- end }}
{{- end }}
