{{- define "margay.labels" -}}
app.kubernetes.io/part-of: margay
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "margay.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* vxlanMode / ipipMode of a pool: its own, else from .Values.encapsulation. */}}
{{- define "margay.encap" -}}
{{- $enc := .root.Values.encapsulation -}}
{{- if not (has $enc.type (list "None" "VXLAN" "IPIP")) -}}
{{- fail (printf "encapsulation.type %q: allowed None, VXLAN, IPIP" $enc.type) -}}
{{- end -}}
{{- if not (has $enc.mode (list "Always" "CrossSubnet")) -}}
{{- fail (printf "encapsulation.mode %q: allowed Always, CrossSubnet" $enc.mode) -}}
{{- end -}}
vxlanMode: {{ .pool.vxlanMode | default (ternary $enc.mode "Never" (eq $enc.type "VXLAN")) }}
ipipMode: {{ .pool.ipipMode | default (ternary $enc.mode "Never" (eq $enc.type "IPIP")) }}
{{- end -}}

{{- define "margay.probes" -}}
livenessProbe:
  httpGet:
    path: /livez
    port: {{ .Values.agent.healthPort }}
    host: 127.0.0.1
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .Values.agent.healthPort }}
    host: 127.0.0.1
  periodSeconds: 5
{{- end -}}
