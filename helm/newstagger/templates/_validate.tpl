{{/* Checks of the values at install time, and the figures they rest on. */}}

{{/*
Memory the service needs, in MiB, measured with the default model (RSS, 2-core machine): a serving
process ~262 MiB, ~316 MiB while a reload holds two models; the `serve --workers` supervisor ~200 MiB;
`train` ~780 MiB plus ~320 MiB per cross-validation fold process (5 folds, one process per CPU the pod
may use: 1412 MiB with 2, 2364 MiB with 5). Bigger models and more training data need more.
*/}}
{{- define "newstagger.mib.servingProcess" -}}320{{- end -}}
{{- define "newstagger.mib.supervisor" -}}200{{- end -}}
{{- define "newstagger.mib.train" -}}780{{- end -}}
{{- define "newstagger.mib.foldProcess" -}}320{{- end -}}
{{- define "newstagger.folds" -}}5{{- end -}}

{{/* A memory quantity (1Gi, 1536Mi, 2G, 1073741824) in MiB, rounded down; "" when it cannot be read. */}}
{{- define "newstagger.mebibytes" -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- divf . 1048576 | floor | int -}}
{{- else -}}
{{- $q := toString . -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $factors := dict "" 1.0 "k" 1e3 "Ki" 1024.0 "M" 1e6 "Mi" 1048576.0 "G" 1e9 "Gi" 1073741824.0 "T" 1e12 "Ti" 1099511627776.0 -}}
{{- $suffix := trimPrefix $number $q -}}
{{- if and $number (hasKey $factors $suffix) -}}
{{- divf (mulf (float64 $number) (get $factors $suffix)) 1048576 | floor | int -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A CPU quantity (2, "1500m", 0.5) as whole CPUs, rounded up (what a CPU limit lets a process count). */}}
{{- define "newstagger.cpus" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}
{{- divf (float64 (trimSuffix "m" $q)) 1000 | ceil | int -}}
{{- else -}}
{{- float64 $q | ceil | int -}}
{{- end -}}
{{- end -}}

{{/* A Prometheus duration (1m30s, 500ms; as the schema's pattern) in milliseconds. */}}
{{- define "newstagger.durationMs" -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 "w" 604800000 "y" 31536000000 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" (toString .) -1 -}}
{{- $unit := regexFind "[a-z]+$" . -}}
{{- $total = add $total (mul (trimSuffix $unit .) (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
The port of one bootstrap server as written, "" when it has none (kafka-python then uses 9092): host,
host:port, [IPv6], [IPv6]:port; an IPv6 literal without brackets has no port.
*/}}
{{- define "newstagger.brokerPort" -}}
{{- $b := trim . -}}
{{- if hasPrefix "[" $b -}}
{{- regexFind "\\].*$" $b | trimPrefix "]" | trimPrefix ":" -}}
{{- else if eq (len (splitList ":" $b)) 2 -}}
{{- last (splitList ":" $b) -}}
{{- end -}}
{{- end -}}

{{/* Fails when a container's memory limit is below what it needs. Call with (dict "key" "server.resources" "resources" $r "need" 320 "why" "..."). */}}
{{- define "newstagger.checkMemory" -}}
{{- $limit := dig "limits" "memory" "" .resources -}}
{{- if $limit -}}
{{- $mib := include "newstagger.mebibytes" $limit -}}
{{- if and $mib (lt (int $mib) (int .need)) -}}
{{- fail (printf "%s.limits.memory (%v = %s MiB) is below the %d MiB %s needs (%s); the container would be OOM-killed. Raise it (and requests.memory to match)." .key $limit $mib (int .need) .what .why) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Checks across values that a JSON schema cannot express clearly. Every failure names the
values to change. Included by configmap.yaml, which every install renders.
*/}}
{{- define "newstagger.validate" -}}
{{- $v := .Values -}}
{{- if and $v.worker.autoscaling.enabled $v.worker.keda.enabled -}}
{{- fail "worker.autoscaling.enabled (CPU HPA) and worker.keda.enabled (KEDA ScaledObject on Kafka lag) are mutually exclusive: both would own the worker Deployment's replica count. Turn one of them off." -}}
{{- end -}}
{{- if and (include "newstagger.kafkaSasl" .) (not $v.kafka.sasl.existingSecret) -}}
{{- fail (printf "kafka.securityProtocol is %s but kafka.sasl.existingSecret is empty: name an existing Secret holding the SASL username and password (keys %q and %q, see kafka.sasl.usernameKey/passwordKey). Credentials are never taken from values." $v.kafka.securityProtocol $v.kafka.sasl.usernameKey $v.kafka.sasl.passwordKey) -}}
{{- end -}}
{{- if and $v.grpc.tls.enabled (not $v.grpc.tls.secretName) -}}
{{- fail "grpc.tls.enabled is true but grpc.tls.secretName is empty: name an existing kubernetes.io/tls Secret holding the server certificate and key." -}}
{{- end -}}
{{- if and $v.http.enabled $v.http.probes $v.grpc.tls.mutual -}}
{{- fail "http.probes cannot be used with grpc.tls.mutual: kubelet probes present no client certificate. Set http.probes=false (the server is then probed on the metrics port)." -}}
{{- end -}}
{{- if and $v.grpc.tls.mutual (not $v.grpc.tls.enabled) -}}
{{- fail "grpc.tls.mutual requires grpc.tls.enabled." -}}
{{- end -}}
{{- if and $v.retrain.enabled (not $v.retrain.dataVolume) -}}
{{- fail "retrain.enabled is true but retrain.dataVolume is empty: give a volume source holding the training files, e.g. {persistentVolumeClaim: {claimName: news-labels}}." -}}
{{- end -}}
{{- if and $v.server.autoscaling.enabled (gt (int $v.server.autoscaling.minReplicas) (int $v.server.autoscaling.maxReplicas)) -}}
{{- fail (printf "server.autoscaling.minReplicas (%d) is above server.autoscaling.maxReplicas (%d)." (int $v.server.autoscaling.minReplicas) (int $v.server.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if $v.worker.enabled -}}
{{- $partitions := int $v.kafka.partitions -}}
{{- $autoscaled := or $v.worker.autoscaling.enabled $v.worker.keda.enabled -}}
{{- $max := int (include "newstagger.workerMaxReplicas" .) -}}
{{- if and $autoscaled (not $v.worker.allowReplicasAbovePartitions) (gt $max $partitions) -}}
{{- fail (printf "the worker autoscaler maximum (%d) is above kafka.partitions (%d): extra workers would get no partition. Lower the maximum, raise kafka.partitions to match the input topic, or set worker.allowReplicasAbovePartitions=true." $max $partitions) -}}
{{- end -}}
{{- if and (not $autoscaled) (not $v.worker.allowReplicasAbovePartitions) (gt (int $v.worker.replicaCount) $partitions) -}}
{{- fail (printf "worker.replicaCount (%d) is above kafka.partitions (%d): extra workers would get no partition. Lower worker.replicaCount, raise kafka.partitions to match the input topic, or set worker.allowReplicasAbovePartitions=true." (int $v.worker.replicaCount) $partitions) -}}
{{- end -}}
{{- $min := ternary (int $v.worker.keda.minReplicaCount) (int $v.worker.autoscaling.minReplicas) $v.worker.keda.enabled -}}
{{- if and $autoscaled (gt $min $max) -}}
{{- fail (printf "the worker autoscaler minimum (%d) is above its maximum (%d)." $min $max) -}}
{{- end -}}
{{- end -}}
{{- if and $v.http.probes (not $v.http.enabled) -}}
{{- fail "http.probes is true but http.enabled is false: the server has no HTTP API to probe. Set http.enabled=true, or http.probes=false." -}}
{{- end -}}
{{- if $v.server.enabled -}}
{{- $ports := list (int $v.grpc.port) (int $v.metrics.port) -}}
{{- if $v.http.enabled -}}{{- $ports = append $ports (int $v.http.port) -}}{{- end -}}
{{- if ne (len $ports) (len (uniq $ports)) -}}
{{- fail (printf "grpc.port, metrics.port%s must differ (got %v): the server binds each one." (ternary " and http.port" "" $v.http.enabled) $ports) -}}
{{- end -}}
{{- $workers := int $v.server.workers -}}
{{- $need := mul $workers (int (include "newstagger.mib.servingProcess" .)) -}}
{{- if gt $workers 1 -}}{{- $need = add $need (int (include "newstagger.mib.supervisor" .)) -}}{{- end -}}
{{- include "newstagger.checkMemory" (dict "key" "server.resources" "resources" $v.server.resources "need" $need "what" (printf "server.workers=%d" $workers) "why" (printf "%s MiB per serving process during a model reload%s, with the default model" (include "newstagger.mib.servingProcess" .) (ternary (printf " plus %s MiB for the supervisor" (include "newstagger.mib.supervisor" .)) "" (gt $workers 1)))) -}}
{{- end -}}
{{- if $v.worker.enabled -}}
{{- include "newstagger.checkMemory" (dict "key" "worker.resources" "resources" $v.worker.resources "need" (int (include "newstagger.mib.servingProcess" .)) "what" "the stream worker" "why" "one process during a model reload, with the default model") -}}
{{- end -}}
{{- if $v.retrain.enabled -}}
{{- $folds := int (include "newstagger.folds" .) -}}
{{- $cpuLimit := dig "limits" "cpu" "" $v.retrain.resources -}}
{{- $procs := $folds -}}
{{- if $cpuLimit -}}{{- $procs = min $folds (max 1 (int (include "newstagger.cpus" $cpuLimit))) -}}{{- end -}}
{{- $need := add (int (include "newstagger.mib.train" .)) (mul $procs (int (include "newstagger.mib.foldProcess" .))) -}}
{{- include "newstagger.checkMemory" (dict "key" "retrain.resources" "resources" $v.retrain.resources "need" $need "what" "training" "why" (printf "%s MiB plus %s MiB per fold process, %d of them %s, on the starter set" (include "newstagger.mib.train" .) (include "newstagger.mib.foldProcess" .) $procs (ternary (printf "with limits.cpu %v" $cpuLimit) "without a CPU limit (one per node CPU, at most 5)" (not (empty $cpuLimit))))) -}}
{{- range $r := $v.retrain.extraArgs -}}
{{- $flag := first (splitList "=" $r) -}}
{{- if has $flag (list "--data" "--dev" "--registry" "--out" "--no-promote" "--promote-if-better") -}}
{{- fail (printf "retrain.extraArgs holds %q: the chart passes --data (retrain.trainFiles), --dev (retrain.devFile), --registry (models.mountPath) and --promote-if-better (the quality gate) itself; --out and --no-promote would bypass the gate." $r) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $k := $v.kafka -}}
{{- if and $k.sasl.existingSecret (not (include "newstagger.kafkaSasl" .)) -}}
{{- fail (printf "kafka.sasl.existingSecret (%s) is set but kafka.securityProtocol is %s: the credentials would be silently unused. Set kafka.securityProtocol to SASL_SSL (or SASL_PLAINTEXT), or unset kafka.sasl.existingSecret." $k.sasl.existingSecret $k.securityProtocol) -}}
{{- end -}}
{{- if and $k.tls.existingSecret (not (include "newstagger.kafkaTls" .)) -}}
{{- fail (printf "kafka.tls.existingSecret (%s) is set but kafka.securityProtocol is %s: the Secret would be silently unused and the brokers reached without TLS. Set kafka.securityProtocol to SSL or SASL_SSL, or unset kafka.tls.existingSecret." $k.tls.existingSecret $k.securityProtocol) -}}
{{- end -}}
{{- if and (or $k.tls.certKey $k.tls.keyKey) (not (include "newstagger.kafkaTlsSecret" .)) -}}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey are set but no Kafka TLS Secret is mounted (it is with kafka.tls.existingSecret and securityProtocol SSL or SASL_SSL): SSL client authentication would be silently off." -}}
{{- end -}}
{{- if and (include "newstagger.kafkaTlsSecret" .) (ne (empty $k.tls.certKey) (empty $k.tls.keyKey)) -}}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: set both for SSL client authentication, or neither." -}}
{{- end -}}
{{- if and (include "newstagger.kafkaTlsSecret" .) (not (or $k.tls.caKey $k.tls.certKey)) -}}
{{- fail (printf "kafka.tls.existingSecret (%s) is mounted but kafka.tls.caKey, certKey and keyKey are all empty: nothing would be read from it. Name the CA bundle's key (kafka.tls.caKey) or the client certificate's, or unset kafka.tls.existingSecret." $k.tls.existingSecret) -}}
{{- end -}}
{{- /* Ports. The schema bounds grpc.port, http.port, metrics.port and kafkaPorts to 1-65535; the checks below see the rest. */ -}}
{{- $unprivileged := 1024 -}}
{{- range (dig "sysctls" (list) $v.podSecurityContext) }}{{ if eq .name "net.ipv4.ip_unprivileged_port_start" }}{{ $unprivileged = atoi (toString .value) }}{{ end }}{{ end -}}
{{- $listeners := list -}}
{{- if $v.server.enabled }}{{ $listeners = list "grpc" "metrics" }}{{ if $v.http.enabled }}{{ $listeners = append $listeners "http" }}{{ end }}{{ end -}}
{{- if $v.worker.enabled }}{{ $listeners = append $listeners "metrics" }}{{ end -}}
{{- range $name := uniq $listeners -}}
{{- $port := int (get $v $name).port -}}
{{- if lt $port $unprivileged -}}
{{- fail (printf "%s.port (%d) is below %d, the first port a non-root process may bind: the pods run as a non-root user with every capability dropped, so the %s listener would fail at start. Use a port from %d up, or lower the pods' limit with podSecurityContext.sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"%d\"}]." $name $port $unprivileged $name $unprivileged $port) -}}
{{- end -}}
{{- end -}}
{{- $brokers := list -}}
{{- if $v.worker.enabled -}}
{{- range $broker := splitList "," $v.kafka.bootstrapServers -}}
{{- $text := include "newstagger.brokerPort" $broker -}}
{{- $port := ternary 9092 (atoi $text) (empty $text) -}}
{{- if or (hasSuffix ":" (trim $broker)) (not (and (regexMatch "^[0-9]*$" $text) (ge $port 1) (le $port 65535))) -}}
{{- fail (printf "kafka.bootstrapServers names %s, whose port %q is not a port number (1-65535)." (trim $broker) $text) -}}
{{- end -}}
{{- $brokers = append $brokers (list (trim $broker) $port) -}}
{{- end -}}
{{- end -}}
{{- $egress := $v.networkPolicy.egress -}}
{{- if and $v.networkPolicy.enabled $egress.enabled -}}
{{- $open := list -}}{{- /* TCP port ranges [first last] the stream worker may reach */ -}}
{{- range $egress.kafkaPorts }}{{ $open = append $open (list (int .) (int .)) }}{{ end -}}
{{- $anyPort := false -}}
{{- range $i, $rule := $egress.extraRules -}}
{{- $rulePorts := dig "ports" (list) $rule -}}
{{- if not $rulePorts }}{{ $anyPort = true }}{{ end -}}
{{- range $j, $p := $rulePorts -}}
{{- $key := printf "networkPolicy.egress.extraRules[%d].ports[%d]" $i $j -}}
{{- $tcp := eq (get $p "protocol" | default "TCP") "TCP" -}}
{{- $first := get $p "port" -}}
{{- $numbered := and (hasKey $p "port") (not (kindIs "string" $first)) -}}
{{- if and (hasKey $p "endPort") (not $numbered) -}}
{{- fail (printf "%s.endPort needs a numbered %s.port to start the range (Kubernetes refuses it otherwise)." $key $key) -}}
{{- end -}}
{{- if $numbered -}}
{{- $last := ternary (get $p "endPort") $first (hasKey $p "endPort") -}}
{{- range $bound := list (list "port" $first) (list "endPort" $last) -}}
{{- if or (lt (int (last $bound)) 1) (gt (int (last $bound)) 65535) -}}
{{- fail (printf "%s.%s (%v) is out of the port range 1-65535." $key (first $bound) (last $bound)) -}}
{{- end -}}
{{- end -}}
{{- if lt (int $last) (int $first) -}}
{{- fail (printf "%s.endPort (%v) is below its port (%v): the range would be empty (Kubernetes refuses it)." $key $last $first) -}}
{{- end -}}
{{- if $tcp }}{{ $open = append $open (list (int $first) (int $last)) }}{{ end -}}
{{- else if and (not (hasKey $p "port")) $tcp -}}
{{- $anyPort = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $anyPort -}}
{{- range $broker := $brokers -}}
{{- $port := last $broker -}}
{{- $reached := false -}}
{{- range $open }}{{ if and (ge $port (first .)) (le $port (last .)) }}{{ $reached = true }}{{ end }}{{ end -}}
{{- if not $reached -}}
{{- $shown := list -}}
{{- range $open }}{{ $shown = append $shown (ternary (toString (first .)) (printf "%d-%d" (first .) (last .)) (eq (first .) (last .))) }}{{ end -}}
{{- fail (printf "kafka.bootstrapServers names %s, but networkPolicy.egress lets the stream worker out to TCP ports %v only: it could not reach the broker. Add %d to networkPolicy.egress.kafkaPorts." (first $broker) $shown $port) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $sm := $v.metrics.serviceMonitor -}}
{{- if and $sm.enabled (or $v.server.enabled $v.worker.enabled) -}}
{{- if gt (int64 (include "newstagger.durationMs" $sm.scrapeTimeout)) (int64 (include "newstagger.durationMs" $sm.interval)) -}}
{{- fail (printf "metrics.serviceMonitor.scrapeTimeout (%s) is longer than metrics.serviceMonitor.interval (%s): Prometheus refuses a scrape config whose timeout exceeds its interval. Lower scrapeTimeout to %s or less, or raise interval." $sm.scrapeTimeout $sm.interval $sm.interval) -}}
{{- end -}}
{{- end -}}
{{- /* Settings other objects are built from (ports, probes, mounts, KEDA, Secrets): config.extra would split them. */ -}}
{{- $owned := dict "NEWSTAGGER_HOST" "nothing (pods listen on 0.0.0.0 so probes and Services reach them)" "NEWSTAGGER_METRICS_HOST" "nothing (pods listen on 0.0.0.0 so probes and Services reach them)" "NEWSTAGGER_PORT" "grpc.port" "NEWSTAGGER_HTTP_PORT" "http.enabled and http.port" "NEWSTAGGER_METRICS_PORT" "metrics.port" "NEWSTAGGER_MODEL_DIR" "models.mountPath" "NEWSTAGGER_GRACE_SECONDS" "config.graceSeconds" "NEWSTAGGER_WORKERS" "server.workers" "NEWSTAGGER_BOOTSTRAP_SERVERS" "kafka.bootstrapServers" "NEWSTAGGER_INPUT_TOPIC" "kafka.inputTopic" "NEWSTAGGER_GROUP_ID" "kafka.groupId" "NEWSTAGGER_TOPIC_PARTITIONS" "kafka.partitions" "NEWSTAGGER_KAFKA_SECURITY_PROTOCOL" "kafka.securityProtocol" "NEWSTAGGER_KAFKA_SASL_MECHANISM" "kafka.sasl.mechanism" "NEWSTAGGER_TLS_CERT" "grpc.tls" "NEWSTAGGER_TLS_KEY" "grpc.tls" "NEWSTAGGER_TLS_CLIENT_CA" "grpc.tls.mutual" "NEWSTAGGER_ADMIN_TOKEN" "adminToken.existingSecret" "NEWSTAGGER_KAFKA_SASL_USERNAME" "kafka.sasl.existingSecret" "NEWSTAGGER_KAFKA_SASL_PASSWORD" "kafka.sasl.existingSecret" "NEWSTAGGER_KAFKA_SSL_CAFILE" "kafka.tls" "NEWSTAGGER_KAFKA_SSL_CERTFILE" "kafka.tls" "NEWSTAGGER_KAFKA_SSL_KEYFILE" "kafka.tls" -}}
{{- range $key, $_ := $v.config.extra -}}
{{- if not (hasPrefix "NEWSTAGGER_" $key) -}}
{{- fail (printf "config.extra key %q is not a NEWSTAGGER_* setting." $key) -}}
{{- end -}}
{{- if hasKey $owned $key -}}
{{- fail (printf "config.extra sets %s, which the chart builds other objects from (ports, probes, mounts, KEDA, Secrets) or which is secret: set %s instead." $key (get $owned $key)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.worker.enabled (ge (int $v.kafka.heartbeatIntervalMs) (int $v.kafka.sessionTimeoutMs)) -}}
{{- fail (printf "kafka.heartbeatIntervalMs (%d) must be below kafka.sessionTimeoutMs (%d): the Kafka client refuses to start the worker otherwise (a third of it or less is recommended)." (int $v.kafka.heartbeatIntervalMs) (int $v.kafka.sessionTimeoutMs)) -}}
{{- end -}}
{{- range $c := list "server" "worker" -}}
{{- $w := get $v $c -}}
{{- if and $w.enabled $w.autoscaling.enabled (not (dig "requests" "cpu" "" $w.resources)) -}}
{{- fail (printf "%s.autoscaling.enabled scales on CPU utilization, a percentage of %s.resources.requests.cpu, which is unset: the HorizontalPodAutoscaler could not compute it and would never scale. Set %s.resources.requests.cpu." $c $c $c) -}}
{{- end -}}
{{- end -}}
{{- end -}}
