#!/usr/bin/env python3
# Writes the dashboards in dashboards/ (Grafana dashboard model, schema 39).
# Edit here and run `python3 deploy/grafana/generate.py`; CI checks that the
# JSON files are what this writes, and runs every query against Prometheus.
import json, os, sys
# (an argument: write there instead, as CI does to compare)
OUT=sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dashboards')
SEL='cluster=~"$cluster",node=~"$node"'
def ds(): return {"type":"prometheus","uid":"${datasource}"}
def var_ds(): return {"name":"datasource","label":"Data source","type":"datasource","query":"prometheus","current":{},"hide":0,"refresh":1}
def var_q(name,label,query,multi=True):
    return {"name":name,"label":label,"type":"query","datasource":ds(),"query":{"query":query,"refId":name},
            "definition":query,"refresh":2,"includeAll":True,"allValue":".*","multi":multi,"current":{"text":"All","value":"$__all"},"hide":0,"sort":1}
def common_vars():
    return [var_ds(),
            var_q("cluster","Cluster","label_values(kindling_agent_info, cluster)"),
            var_q("node","Node",'label_values(kindling_agent_info{cluster=~"$cluster"}, node)')]
class Dash:
    def __init__(s, uid, title, desc):
        s.d={"uid":uid,"title":title,"description":desc,"tags":["kindling"],"timezone":"browser","schemaVersion":39,"version":1,
             "editable":True,"graphTooltip":1,"time":{"from":"now-1h","to":"now"},"refresh":"30s",
             "templating":{"list":common_vars()},"annotations":{"list":[]},"panels":[],
             "links":[{"type":"dashboards","tags":["kindling"],"asDropdown":True,"title":"Kindling"}]}
        s.x=0; s.y=0; s.id=1
    def var(s, v): s.d["templating"]["list"].append(v)
    def panel(s, title, targets, kind="timeseries", unit="short", w=12, h=8, desc="", extra=None):
        if s.x + w > 24: s.x=0; s.y+=h
        p={"id":s.id,"type":kind,"title":title,"description":desc,"datasource":ds(),"gridPos":{"x":s.x,"y":s.y,"w":w,"h":h},
           "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},"options":{},
           "targets":[dict({"refId":chr(65+i),"datasource":ds()},**t) for i,t in enumerate(targets)]}
        if extra: p.update(extra)
        s.d["panels"].append(p); s.id+=1; s.x+=w
        if s.x>=24: s.x=0; s.y+=h
    def save(s, name):
        with open(os.path.join(OUT,name),'w') as f: json.dump(s.d,f,indent=2); f.write("\n")
def q(expr, legend="", **kw): return dict({"expr":expr,"legendFormat":legend,"range":True},**kw)
def table(expr): return {"expr":expr,"format":"table","instant":True,"range":False,"legendFormat":""}
R='$__rate_interval'

# Overview
d=Dash("kindling-overview","Kindling / Overview","Requests, errors and latency every traced server answered, by protocol; the agents' health.")
ent=f'kindling_entity_request_total{{{SEL}}}'
d.panel("Requests per second, by protocol",[q(f'sum by (protocol) (rate({ent}[{R}]))',"{{protocol}}")],unit="reqps")
d.panel("Error ratio, by protocol",[q(f'sum by (protocol) (rate(kindling_entity_request_total{{{SEL},is_error="true"}}[{R}])) / sum by (protocol) (rate({ent}[{R}]))',"{{protocol}}")],unit="percentunit")
d.panel("p99 latency, by protocol",[q(f'histogram_quantile(0.99, sum by (le, protocol) (rate(kindling_entity_request_duration_seconds_bucket{{{SEL}}}[{R}])))',"{{protocol}}")],unit="s")
d.panel("Busiest workloads",[table(f'topk(15, sum by (protocol, comm, port) (rate({ent}[5m])))')],kind="table",unit="reqps")
d.panel("Agent: events per second and losses",[q(f'sum by (node) (rate(kindling_agent_events_total{{{SEL}}}[{R}]))',"{{node}} events"),
        q(f'sum by (node, reason) (rate(kindling_agent_events_lost_total{{{SEL}}}[{R}]))',"{{node}} lost: {{reason}}")],unit="short")
d.panel("Agent: CPU and memory",[q(f'rate(kindling_agent_cpu_seconds_total{{{SEL}}}[{R}])',"{{node}} CPU (cores)"),
        q(f'kindling_agent_resident_memory_bytes{{{SEL}}} / 1048576',"{{node}} RSS (MiB)")],unit="short")
d.save("overview.json")

# Service map
d=Dash("kindling-service-map","Kindling / Service map","Who calls whom: calls per second between processes and the servers they reach (the topology series).")
top=f'kindling_topology_request_total{{{SEL}}}'
edges=(f'label_join(label_join(label_join(sum by (src_comm, dst_ip, dst_port) (rate({top}[5m])), '
       f'"source", "", "src_comm"), "target", ":", "dst_ip", "dst_port"), "id", "->", "source", "target")')
nodes=(f'label_join(sum by (src_comm) (rate({top}[5m])), "id", "", "src_comm") '
       f'or label_join(sum by (dst_ip, dst_port) (rate({top}[5m])), "id", ":", "dst_ip", "dst_port")')
d.panel("Service map",[dict(table(nodes),refId="nodes"),dict(table(edges),refId="edges")],kind="nodeGraph",w=24,h=14,
        desc="Nodes: calling processes and the servers (address:port) they call; edges: calls per second.",
        extra={"transformations":[{"id":"organize","options":{"renameByName":{"Value #nodes":"mainStat","Value #edges":"mainStat"}}}]})
d.panel("Calls per second, caller to callee",[q(f'sum by (src_comm, dst_name, dst_ip, dst_port) (rate({top}[{R}]))',"{{src_comm}} -> {{dst_name}} {{dst_ip}}:{{dst_port}}")],unit="reqps")
d.panel("Failing calls per second, caller to callee",[q(f'sum by (src_comm, dst_ip, dst_port) (rate(kindling_topology_request_total{{{SEL},is_error="true"}}[{R}]))',"{{src_comm}} -> {{dst_ip}}:{{dst_port}}")],unit="reqps")
d.panel("Mean call time, caller to callee",[q(f'sum by (src_comm, dst_ip, dst_port) (rate(kindling_topology_request_duration_nanoseconds_total{{{SEL}}}[{R}])) / sum by (src_comm, dst_ip, dst_port) (rate({top}[{R}])) / 1e9',"{{src_comm}} -> {{dst_ip}}:{{dst_port}}")],unit="s",w=24)
d.save("service-map.json")

# Workload
d=Dash("kindling-workload","Kindling / Workload","One serving process: its requests by content (templated URL, SQL operation and table, command), errors by status, and its slowest requests.")
d.var(var_q("comm","Process",f'label_values(kindling_entity_request_total{{cluster=~"$cluster",node=~"$node"}}, comm)',multi=False))
d.var(var_q("port","Port",f'label_values(kindling_entity_request_total{{cluster=~"$cluster",node=~"$node",comm=~"$comm"}}, port)'))
W=f'{SEL},comm=~"$comm",port=~"$port"'
d.panel("Requests per second, by request",[q(f'sum by (request_content) (rate(kindling_entity_request_total{{{W}}}[{R}]))',"{{request_content}}")],unit="reqps")
d.panel("Errors per second, by status",[q(f'sum by (response_content) (rate(kindling_entity_request_total{{{W},is_error="true"}}[{R}]))',"{{response_content}}")],unit="reqps")
d.panel("p50 / p99 latency",[q(f'histogram_quantile(0.5, sum by (le) (rate(kindling_entity_request_duration_seconds_bucket{{{W}}}[{R}])))',"p50"),
        q(f'histogram_quantile(0.99, sum by (le) (rate(kindling_entity_request_duration_seconds_bucket{{{W}}}[{R}])))',"p99")],unit="s")
d.panel("Slowest requests (mean time)",[table(f'topk(10, sum by (request_content) (rate(kindling_entity_request_duration_nanoseconds_total{{{W}}}[5m])) / sum by (request_content) (rate(kindling_entity_request_total{{{W}}}[5m])) / 1e9)')],kind="table",unit="s")
d.panel("Bytes per second in and out",[q(f'sum(rate(kindling_entity_request_receive_bytes_total{{{W}}}[{R}]))',"received"),
        q(f'sum(rate(kindling_entity_request_send_bytes_total{{{W}}}[{R}]))',"sent")],unit="Bps",w=24)
d.save("workload.json")

# TCP
d=Dash("kindling-tcp","Kindling / TCP health","Retransmits, resets, round-trip times, failed connects and drops, per peer.")
d.panel("Retransmitted segments per second, by peer",[q(f'sum by (dst_ip, dst_port) (rate(kindling_tcp_retransmit_total{{{SEL}}}[{R}]))',"{{dst_ip}}:{{dst_port}}")])
d.panel("Resets per second",[q(f'sum by (direction, dst_ip, dst_port) (rate(kindling_tcp_reset_total{{{SEL}}}[{R}]))',"{{direction}} {{dst_ip}}:{{dst_port}}")])
d.panel("Smoothed RTT, by peer",[q(f'max by (dst_ip, dst_port) (kindling_tcp_srtt_microseconds{{{SEL}}}) / 1e6',"{{dst_ip}}:{{dst_port}}")],unit="s")
d.panel("Connects and failed connects per second",[q(f'sum by (dst_ip, dst_port) (rate(kindling_tcp_connect_total{{{SEL}}}[{R}]))',"ok {{dst_ip}}:{{dst_port}}"),
        q(f'sum by (dst_ip, dst_port) (rate(kindling_tcp_connect_failure_total{{{SEL}}}[{R}]))',"failed {{dst_ip}}:{{dst_port}}")])
d.panel("Mean handshake time",[q(f'sum by (dst_ip, dst_port) (rate(kindling_tcp_connect_duration_nanoseconds_total{{{SEL}}}[{R}])) / sum by (dst_ip, dst_port) (rate(kindling_tcp_connect_total{{{SEL}}}[{R}])) / 1e9',"{{dst_ip}}:{{dst_port}}")],unit="s")
d.panel("Drops per second, by kernel reason",[q(f'sum by (reason) (rate(kindling_tcp_drop_total{{{SEL}}}[{R}]))',"{{reason}}"),
        q(f'sum (rate(kindling_tcp_packet_loss_total{{{SEL}}}[{R}]))',"packet loss")])
d.save("tcp.json")

# DNS
d=Dash("kindling-dns","Kindling / DNS","Queries each process made: answer codes, failing and slowest names.")
dns=f'kindling_dns_request_total{{{SEL}}}'
d.panel("Queries per second, by answer code",[q(f'sum by (rcode) (rate({dns}[{R}]))',"{{rcode}}")],unit="reqps")
d.panel("Failure ratio",[q(f'sum (rate(kindling_dns_request_total{{{SEL},rcode!="NOERROR"}}[{R}])) / sum (rate({dns}[{R}]))',"failing")],unit="percentunit")
d.panel("Failing names",[table(f'topk(15, sum by (domain, rcode, comm) (rate(kindling_dns_request_total{{{SEL},rcode!="NOERROR"}}[5m])))')],kind="table",unit="reqps")
d.panel("Slowest names (mean answer time)",[table(f'topk(15, sum by (domain) (rate(kindling_dns_request_duration_nanoseconds_total{{{SEL}}}[5m])) / sum by (domain) (rate({dns}[5m])) / 1e9)')],kind="table",unit="s")
d.save("dns.json")
print("ok")
