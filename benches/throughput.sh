#!/usr/bin/env bash
# Forwarder throughput (issue #6), run by hand as root, not in CI:
#
#   sudo benches/throughput.sh            # RUNS=3 TCP_SECS=10 UDP_SECS=5 by default
#
# Two namespaces, "web" (10.0.1.10) and "app" (10.0.2.10) of the three-tier VPC, and in one
# run, single-stream TCP (iperf3 -t TCP_SECS, RUNS runs, median), 64-byte UDP packets/s
# (iperf3 -u -l 64 -b 0, received by the server) and ICMP echo round trips (median of 500)
# through:
#   (a) kernel: a router namespace with veth pairs, IP forwarding and an equivalent nftables
#       stateful ruleset (established/related accept, TCP/UDP 8080 and ICMP echo new accept)
#   (b) null: `vpcfw run --null`, the same TAP loop with the firewall bypassed
#   (c) vpcfw: `vpcfw run` with the three-tier policy (plus UDP 8080 and ICMP echo between the
#       web and app tiers, so the UDP and ping measurements pass the firewall)
#   (d) vpcfw-960: (c) with one more security group of 960 inbound rules on both ENIs
# and the forwarder's CPU time per frame and per wire segment (from /proc and its metrics).
# PATHS="b c" (say) measures only those paths; VPCFW=BIN uses another build of vpcfw.
# With MQ=1 it then measures multi-queue: STREAMS parallel streams (iperf3 -P, default 4)
# through (c) with one worker and with WORKERS workers (default 2, `vpcfw run --workers`).
# Needs iperf3, nft, ping and python3 (`.ci/setup-net` installs the first three).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
TCP_SECS=${TCP_SECS:-10}
UDP_SECS=${UDP_SECS:-5}
PATHS=${PATHS:-a b c d} # which of the paths below to measure
MQ=${MQ:-0}
STREAMS=${STREAMS:-4}
WORKERS=${WORKERS:-2}
PAR=1 # parallel iperf3 streams of the current measurement
P=vtp$$
WORK=$(mktemp -d /tmp/vpcfw-throughput.XXXXXX)
BIN=${VPCFW:-target/release/vpcfw}
FWD_PID=
METRICS_PORT=$((20000 + $$ % 20000))

[ "$(id -u)" -eq 0 ] || { echo "throughput.sh: needs root (namespaces, TAP devices)"; exit 1; }
for t in iperf3 nft ping python3 ip; do
  command -v $t >/dev/null || { echo "throughput.sh: $t is missing (run .ci/setup-net)"; exit 1; }
done
[ -x "$BIN" ] || cargo build --release --bin vpcfw

cleanup() {
  [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null && wait "$FWD_PID" 2>/dev/null || true
  FWD_PID=
  for ns in $P-web $P-app $P-rtr; do
    if ip netns list | grep -qw "$ns"; then
      for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}
trap 'cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# --- snapshots: three-tier + UDP 8080 and ICMP echo web<->app; and + 960 inbound rules
python3 - "$WORK" <<'EOF'
import json, os, shutil, sys
work = sys.argv[1]
src = "examples/three-tier"
for name, bulk in (("bench", False), ("bench960", True)):
    d = os.path.join(work, name)
    os.makedirs(d)
    for f in os.listdir(src):
        if f.endswith(".json") and f != "inspection.json":  # the firewall alone, as in issue #6
            shutil.copy(os.path.join(src, f), d)
    p = os.path.join(d, "describe-network-acls.json")
    acls = json.load(open(p))
    def add(acl_id, num, egress, proto, cidr, ports=None, icmp=None):
        for a in acls["NetworkAcls"]:
            if a["NetworkAclId"] == acl_id:
                e = {"RuleNumber": num, "Egress": egress, "Protocol": proto, "RuleAction": "allow", "CidrBlock": cidr}
                if ports: e["PortRange"] = {"From": ports[0], "To": ports[1]}
                if icmp: e["IcmpTypeCode"] = {"Type": -1, "Code": -1}
                a["Entries"].append(e)
    web, app = "acl-0e1f2a3b4c5d6b001", "acl-0e1f2a3b4c5d6b002"
    add(web, 105, True, "17", "10.0.2.0/24", (8080, 8080)); add(app, 105, False, "17", "10.0.1.0/24", (8080, 8080))
    add(app, 115, True, "17", "10.0.1.0/24", (1024, 65535)); add(web, 125, False, "17", "10.0.2.0/24", (1024, 65535))
    add(web, 106, True, "1", "10.0.2.0/24", icmp=True); add(app, 106, False, "1", "10.0.1.0/24", icmp=True)
    add(app, 116, True, "1", "10.0.1.0/24", icmp=True); add(web, 126, False, "1", "10.0.2.0/24", icmp=True)
    json.dump(acls, open(p, "w"))
    p = os.path.join(d, "describe-security-groups.json")
    sgs = json.load(open(p))
    for g in sgs["SecurityGroups"]:
        if g["GroupId"] == "sg-0e1f2a3b4c5d6c002":
            ref = [{"GroupId": "sg-0e1f2a3b4c5d6c001", "UserId": "111122223333"}]
            g["IpPermissions"].append({"IpProtocol": "udp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": ref})
            g["IpPermissions"].append({"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "UserIdGroupPairs": ref})
    if bulk:
        perms = [{"IpProtocol": "tcp", "FromPort": 1000 + i % 500, "ToPort": 1000 + i % 500,
                  "IpRanges": [{"CidrIp": "172.%d.%d.%d/32" % (16 + i // 65536 % 16, i // 256 % 256, i % 256)}]}
                 for i in range(960)]
        sgs["SecurityGroups"].append({"GroupId": "sg-0e1f2a3b4c5d6c0b0", "GroupName": "bulk",
                                      "IpPermissions": perms, "IpPermissionsEgress": []})
        p2 = os.path.join(d, "describe-network-interfaces.json")
        enis = json.load(open(p2))
        for e in enis["NetworkInterfaces"]:
            e["Groups"].append({"GroupId": "sg-0e1f2a3b4c5d6c0b0", "GroupName": "bulk"})
        json.dump(enis, open(p2, "w"))
    json.dump(sgs, open(p, "w"))
EOF

ns_pair() { # creates $P-web and $P-app
  ip netns add $P-web; ip netns add $P-app
  ip -n $P-web link set lo up; ip -n $P-app link set lo up
}

conf() { # ns dev addr gw
  ip -n "$1" link set "$2" up
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" route add default via "$4" dev "$2"
}

setup_kernel() {
  ns_pair; ip netns add $P-rtr; ip -n $P-rtr link set lo up
  ip link add ${P}w type veth peer name ${P}W; ip link add ${P}a type veth peer name ${P}A
  ip link set ${P}w netns $P-web; ip link set ${P}W netns $P-rtr
  ip link set ${P}a netns $P-app; ip link set ${P}A netns $P-rtr
  conf $P-web ${P}w 10.0.1.10/24 10.0.1.1; conf $P-app ${P}a 10.0.2.10/24 10.0.2.1
  ip -n $P-rtr link set ${P}W up; ip -n $P-rtr addr add 10.0.1.1/24 dev ${P}W
  ip -n $P-rtr link set ${P}A up; ip -n $P-rtr addr add 10.0.2.1/24 dev ${P}A
  ip netns exec $P-rtr sysctl -qw net.ipv4.ip_forward=1
  ip netns exec $P-rtr nft -f - <<'EOF'
table inet vpc {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip saddr 10.0.1.0/24 ip daddr 10.0.2.0/24 tcp dport 8080 ct state new accept
    ip saddr 10.0.1.0/24 ip daddr 10.0.2.0/24 udp dport 8080 ct state new accept
    ip saddr 10.0.1.0/24 ip daddr 10.0.2.0/24 icmp type echo-request ct state new accept
  }
}
EOF
}

setup_vpcfw() { # snapshot-dir extra-args...
  local snap=$1; shift
  ns_pair
  "$BIN" run --snapshot "$snap" --tap eni-0e1f2a3b4c5d6d001=${P}w --tap eni-0e1f2a3b4c5d6d002=${P}a \
    --metrics 127.0.0.1:$METRICS_PORT "$@" 2>"$WORK/run.log" &
  FWD_PID=$!
  for _ in $(seq 100); do ip link show ${P}a >/dev/null 2>&1 && break; sleep 0.05; done
  ip link set ${P}w netns $P-web; ip link set ${P}a netns $P-app
  conf $P-web ${P}w 10.0.1.10/24 10.0.1.1; conf $P-app ${P}a 10.0.2.10/24 10.0.2.1
}

metric() { # name -> value
  exec 3<>/dev/tcp/127.0.0.1/$METRICS_PORT
  printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
  awk -v m="$1" '$1 == m {print $2}' <&3
  exec 3<&-
}

cpu_ticks() { awk '{print $14 + $15}' /proc/"$FWD_PID"/stat; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
spread() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }

measure() { # label
  local label=$1 tcp=() udp=() t0 t1 f0 f1 s0 s1 hz srv key
  key=$(printf %s "$label" | tr -c "a-z0-9" "_")
  hz=$(getconf CLK_TCK)
  for r in $(seq "$RUNS"); do
    ip netns exec $P-app iperf3 -s -p 8080 -1 >/dev/null 2>&1 &
    srv=$!
    sleep 0.3
    if [ -n "$FWD_PID" ]; then t0=$(cpu_ticks); f0=$(metric vpcfw_rx_frames_total); s0=$(metric vpcfw_rx_segments_total); fi
    ip netns exec $P-web iperf3 -c 10.0.2.10 -p 8080 -t "$TCP_SECS" -P "$PAR" -J >"$WORK/tcp.json"
    if [ -n "$FWD_PID" ]; then
      t1=$(cpu_ticks); f1=$(metric vpcfw_rx_frames_total); s1=$(metric vpcfw_rx_segments_total)
      echo "$(( (t1 - t0) * 1000000000 / hz / (f1 - f0) )) $(( (t1 - t0) * 1000000000 / hz / (s1 - s0) ))" >>"$WORK/cpu.$key"
    fi
    tcp+=("$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9, 2))' "$WORK/tcp.json")")
    wait "$srv" || true
  done
  for r in $(seq "$RUNS"); do
    ip netns exec $P-app iperf3 -s -p 8080 -1 >/dev/null 2>&1 &
    srv=$!
    sleep 0.3
    ip netns exec $P-web iperf3 -c 10.0.2.10 -p 8080 -u -l 64 -b 0 -t "$UDP_SECS" -P "$PAR" -J >"$WORK/udp.json" || true
    udp+=("$(python3 -c '
import json,sys
e=json.load(open(sys.argv[1]))["end"]["sum"]
print(int((e["packets"]-e["lost_packets"])/e["seconds"]))' "$WORK/udp.json")")
    wait "$srv" || true
  done
  local rtt
  # Median of 500 echo round trips: robust to the scheduling outliers of a shared machine.
  rtt=$(ip netns exec $P-web ping -c 500 -i 0.002 10.0.2.10 | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | median)
  local cpu_f="-" cpu_s="-"
  if [ -f "$WORK/cpu.$key" ]; then
    cpu_f=$(awk '{print $1}' "$WORK/cpu.$key" | median); cpu_s=$(awk '{print $2}' "$WORK/cpu.$key" | median)
  fi
  printf '| %s | %s (%s) | %s (%s) | %s | %s | %s |\n' "$label" \
    "$(printf '%s\n' "${tcp[@]}" | median)" "$(printf '%s\n' "${tcp[@]}" | spread)" \
    "$(printf '%s\n' "${udp[@]}" | median)" "$(printf '%s\n' "${udp[@]}" | spread)" \
    "${rtt:-?}" "$cpu_f" "$cpu_s" | tee -a "$WORK/table"
}

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; kernel $(uname -r)"
echo
echo "| path | TCP Gb/s median (spread) | UDP 64 B pkt/s median (spread) | ping RTT median ms | fwd CPU ns/frame | fwd CPU ns/segment |"
echo "|---|---|---|---|---|---|"
on() { case " $PATHS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if on a; then setup_kernel; measure "(a) kernel + nftables"; cleanup; fi
if on b; then setup_vpcfw "$WORK/bench" --null; measure "(b) null TAP forwarder"; cleanup; fi
if on c; then setup_vpcfw "$WORK/bench"; measure "(c) vpcfw three-tier"; cleanup; fi
if on d; then setup_vpcfw "$WORK/bench960"; measure "(d) vpcfw 960 SG rules/ENI"; cleanup; fi
if [ "$MQ" = 1 ]; then
  PAR=$STREAMS
  setup_vpcfw "$WORK/bench"; measure "(c) -P $STREAMS, 1 worker"; cleanup
  setup_vpcfw "$WORK/bench" --workers "$WORKERS"; measure "(c) -P $STREAMS, $WORKERS workers"; cleanup
fi
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
