#!/usr/bin/env bash
# make demo: the main job end to end on the simulated SNP firmware.
#   1. create a simulated chip (Milan); launch a VM on it from its images (firmware, kernel,
#      initrd, command line) with a signed ID block, the measurement computed by nitride measure
#   2. the agent asks the evidence provider for a report bound to a fresh nonce
#   3. show the report
#   4. verify it (chain to the chip's ARK, signature, TCB, policy, report data)
#   5. a tampered report is rejected, naming the check that failed
#   6. the vHSM: vhsmd with a keystore sealed by the SNP derived key; sign with a key that never
#      leaves it, verify with plain openssl; restart; a different VM measurement cannot open it
#   7. the attestation service: nitride-attestd with TLS on loopback; `nitride attest` with a
#      transfer key from vhsmd gets an EAR token; another launch configuration is refused with
#      the check that failed; replay of recorded evidence against a candidate policy
#   8. attested secret release (Case B): nitride-kmsd stores secret X with a release policy; an
#      application's call on kms/X finds it missing, vhsmd parks it and asks the agent daemon,
#      which attests and fetches X, sealed to vhsmd's one-shot transfer key and signed by kmsd;
#      the call completes, the next ones are local (Case A); another launch configuration is
#      refused with the rule that failed; the audit chain is shown and verified
#   9. confidential boot: Debian's OVMF measured into a policy; a policy trusting the image
#      signer accepts a new image with a new ID block unchanged; the firmware refuses an ID block
#      for another image, a tampered one, and a policy mismatch
#  10. a LUKS2 volume key sealed to the VM's SNP state (nitride luks seal / unlock --test)
#  11. LUKS with the KMS: enroll (kmsd generates the volume key, released after attestation),
#      unlock through the sealed slot, plain cryptsetup with the token plugin, and self-healing
#      after a measurement change (remote release, re-seal, local again)
#  12. PKCS#11: pkcs11-tool initialises a token, sets a PIN, generates an EC key in the vHSM and
#      signs; plain OpenSSL verifies; a certificate for that key is stored in the token and
#      listed without a login; an AES key is wrapped (RFC 3394) and unwrapped inside the vault
set -euo pipefail
cd "$(dirname "$0")/.."
B=${NT_BUILD:-build}
nitride=$B/src/agent/nitride
vhsmd=$B/src/vhsm/vhsmd
vhsm=$B/src/vhsm/vhsm
W=$(mktemp -d /tmp/nitride-demo.XXXXXX)
pids=()
# Waits for the daemons after killing them: one still writing (attestd's evidence log) would make
# rm -rf fail with "Directory not empty".
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Shows the command (an argument over 120 characters, such as an ID_AUTH_INFO in base64, shortened),
# then runs it.
show() {
  local a out=()
  for a in "$@"; do
    if [ ${#a} -gt 120 ]; then out+=("${a:0:24}...(${#a} chars)"); else out+=("$a"); fi
  done
  printf '%s' "${out[*]}"
}
run() { printf '$ %s\n' "$(show "$@")"; "$@"; }
run_to() { local out=$1; shift; printf '$ %s > %s\n' "$(show "$@")" "${out##*/}"; "$@" >"$out"; }

step "1. A simulated SEV-SNP chip (Milan), and a VM launched on it from its images"
run "$nitride" sim init "$W/chip" --product milan
# The guest's images. Measured direct boot needs an OVMF built with kernel hashes (OvmfPkg/AmdSev):
# Debian 12's ovmf package ships only the OvmfPkgX64 builds (no SNP_KERNEL_HASHES section, see
# step 9), so an AmdSev image is used if one is installed, else the AmdSev build's footer from
# tests/vectors/measure (edk2-stable202405; its last 4 KiB, mapped to end at 4 GiB like a full
# image). The kernel and initrd are Debian's if readable, else small stand-in files.
fw=tests/vectors/measure/ovmf_AmdSev_suffix.bin
for f in /usr/share/ovmf/OVMF.amdsev.fd /usr/share/OVMF/OVMF.amdsev.fd; do
  if [ -r "$f" ]; then fw=$f; break; fi
done
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | head -1 || true)
initrd=$(ls /boot/initrd.img-* 2>/dev/null | head -1 || true)
if [ -z "$kernel" ] || [ ! -r "$kernel" ] || [ -z "$initrd" ] || [ ! -r "$initrd" ]; then
  printf 'demo kernel image\n' >"$W/vmlinuz"; printf 'demo initrd v1\n' >"$W/initrd.img"
  kernel=$W/vmlinuz initrd=$W/initrd.img
fi
vm=(--ovmf "$fw" --kernel "$kernel" --initrd "$initrd" --append "console=ttyS0 root=/dev/vda1"
    --vcpus 2 --vcpu-type EPYC-Milan)
echo "firmware $fw, kernel $kernel, initrd $initrd"
printf '$ %s\n' "nitride measure ${vm[*]}"
meas=$("$nitride" measure "${vm[@]}")
echo "$meas"
echo "The fleet's image-signing key (ID key) signs an ID block for this launch digest and policy:"
openssl ecparam -name secp384r1 -genkey -noout -out "$W/id-key.pem"
family=$(openssl rand -hex 16)
run_to "$W/idblock.json" "$nitride" idblock create --from-measure "${vm[@]}" --id-key "$W/id-key.pem" \
    --policy 0x30000 --family-id "$family" --image-id "$(openssl rand -hex 16)" --guest-svn 1 --json
jq '{id_key_digest, measurement, policy, family_id, image_id, guest_svn}' "$W/idblock.json"
echo "The simulated firmware launches the VM: it computes the measurement from the same images and"
echo "checks the ID block (signature, measurement, policy) as SNP_LAUNCH_FINISH does"
host_data=$(openssl rand -hex 32)
run "$nitride" sim launch "$W/chip" "${vm[@]}" --policy 0x30000 --host-data "$host_data" \
    --id-block "$(jq -r .id_block "$W/idblock.json")" --id-auth "$(jq -r .id_auth "$W/idblock.json")"
run "$nitride" sim show "$W/chip"

step "2. The agent gets an attestation report bound to a fresh verifier nonce"
nonce=$(openssl rand -hex 32)
echo "nonce: $nonce"
run "$nitride" report get --provider sim --sim-dir "$W/chip" --nonce "$nonce" --extended \
    --out "$W/report.bin" --certs-dir "$W/certs"

step "3. The report, every field"
run "$nitride" report show "$W/report.bin"

step "4. Verify: chain to the (explicitly trusted) simulated ARK, signature, TCB, policy, nonce"
report_data=$(printf '%s' "$nonce" | xxd -r -p | openssl dgst -sha512 -binary | xxd -p -c 256)
cat >"$W/policy.json" <<JSON
{
  "report_data": "$report_data",
  "allow_debug": false,
  "vmpls": [0],
  "min_tcb": {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}
}
JSON
echo "The expected measurement goes from the images into the policy (not from the report):"
run "$nitride" measure "${vm[@]}" --policy-out "$W/policy.json"
run cat "$W/policy.json"
run "$nitride" verify "$W/report.bin" --certs "$W/certs" --trust-anchor "$W/chip/ark.pem" \
    --policy "$W/policy.json"

step "5. A tampered report (one byte of the measurement flipped) is rejected"
cp "$W/report.bin" "$W/tampered.bin"
printf '\xff' | dd of="$W/tampered.bin" bs=1 seek=$((0x90)) conv=notrunc status=none
set +e
"$nitride" verify "$W/tampered.bin" --certs "$W/certs" --trust-anchor "$W/chip/ark.pem" \
    --policy "$W/policy.json"
rc=$?
set -e
echo "exit code $rc (1 = invalid evidence)"
[ "$rc" -eq 1 ]

step "5b. Without --trust-anchor the simulated chip is not trusted (only AMD's ARKs are built in)"
set +e
"$nitride" verify "$W/report.bin" --certs "$W/certs" --policy "$W/policy.json" >/dev/null 2>"$W/err"
rc=$?
set -e
tail -n 3 "$W/err"; echo "exit code $rc"
[ "$rc" -eq 1 ]

if [ -x "$vhsmd" ] && [ -x "$vhsm" ]; then
  step "6. The vHSM: vhsmd, keystore sealed with the SNP derived key"
  sock=$W/vhsm.sock
  "$vhsmd" --foreground --socket "$sock" --keystore "$W/keystore" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore.anchor" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  V() { "$vhsm" --socket "$sock" "$@"; }
  run V key create signer --type p384
  run V key list
  echo "a message from the demo" >"$W/msg"
  run V sign signer --raw --in "$W/msg" --out "$W/msg.sig"
  run V pubkey signer --format pem --out "$W/signer.pem"
  run openssl dgst -sha384 -verify "$W/signer.pem" -signature "$W/msg.sig" "$W/msg"
  run V key create data --type aes256
  echo "secret payload" | V encrypt data --out "$W/ct"
  run V decrypt data --in "$W/ct"
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    step "6a. Local users: each uid has its own namespace and quotas (here 3 keys per uid)"
    kill "${pids[-1]}"; wait "${pids[-1]}" || true
    chmod 755 "$W" # other uids reach the socket (access is decided per key)
    "$vhsmd" --foreground --socket "$sock" --keystore "$W/keystore" --provider sim --sim-dir "$W/chip" \
      --freshness-anchor "file:$W/run/keystore.anchor" --quota-keys 3 &
    pids+=($!)
    for _ in $(seq 50); do V ping >/dev/null 2>&1 && break; sleep 0.1; done
    AS() { local u=$1; shift; echo "+ (uid $u) vhsm $*" >&2; setpriv --reuid "$u" --regid "$u" --clear-groups "$vhsm" --socket "$sock" "$@"; }
    expect() { local want=$1 got=0; shift; "$@" || got=$?; echo "exit code $got"; [ "$got" = "$want" ]; }
    AS 1500 key create db --type aes256
    echo "uid 1600 tries to squat uid 1500's key name, then its own 'db' granting 1500 use:"
    expect 12 AS 1600 key create 1500/db --type aes256 --allow-uid 1500
    AS 1600 key create db --type aes256 --allow-uid 1500 --allow-uid 1600
    AS 1500 --json key info db | jq -c '{name, acl}'
    echo "uid 1600 fills its quota:"
    AS 1600 key create k1 --type p256
    AS 1600 key create k2 --type p256
    expect 11 AS 1600 key create k3 --type p256
    echo "root (the agent) still creates keys, in its own namespace 0/:"
    run V key create 0/luks-demo --type aes256
    echo "kms/ is import-only: only a release signed by the KMS creates a key there, root included:"
    expect 12 V key create kms/luks-demo --type aes256
    run V key list
  fi
  step "6b. Restart vhsmd: the sealed keystore opens again on the same VM"
  kill "${pids[-1]}"; wait "${pids[-1]}" || true
  "$vhsmd" --foreground --socket "$sock" --keystore "$W/keystore" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore.anchor" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  run V decrypt data --in "$W/ct"
  step "6b'. The host puts back an older keystore file: refused (freshness anchor in VM memory)"
  cp "$W/keystore" "$W/keystore.old"
  run V key delete data
  kill "${pids[-1]}"; wait "${pids[-1]}" || true
  cp "$W/keystore.old" "$W/keystore"
  set +e
  timeout 10 "$vhsmd" --foreground --socket "$sock" --keystore "$W/keystore" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore.anchor" 2>&1 | grep -o 'is generation.*(rollback)'
  rc=${PIPESTATUS[0]}
  set -e
  echo "vhsmd exit code $rc (refused: deleted keys would come back)"
  [ "$rc" -ne 0 ]
  step "6c. A VM with another measurement cannot open the keystore"
  "$nitride" sim set "$W/chip" --measurement "$(openssl rand -hex 48)" >/dev/null
  set +e
  timeout 10 "$vhsmd" --foreground --socket "$sock" --keystore "$W/keystore" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore.anchor"
  rc=$?
  set -e
  echo "vhsmd exit code $rc (refused, keystore left untouched)"
  [ "$rc" -ne 0 ]
fi

attestd=$B/src/attestd/nitride-attestd
if [ -x "$attestd" ]; then
  step "7. The attestation service: nitride-attestd on 127.0.0.1 with TLS"
  "$nitride" sim set "$W/chip" --measurement "$meas" >/dev/null   # the VM we expect, again
  mkdir -p "$W/attestd"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$W/attestd/tls.key" -out "$W/attestd/tls.pem" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  (umask 077; head -c 32 /dev/urandom >"$W/attestd/challenge.key")
  printf '{"measurements": ["%s"]}\n' "$meas" >"$W/attestd/policy.json"
  cat >"$W/attestd/attestd.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "tls": {"cert": "tls.pem", "key": "tls.key"},
  "challenge": {"secret": "challenge.key"},
  "token": {"keys_dir": "keys", "issuer": "https://attestd.demo"},
  "trust_anchors": ["$W/chip/ark.pem"],
  "policies": {"prod": {"file": "policy.json"}},
  "evidence_log": {"path": "evidence.db"}
}
EOF
  run cat "$W/attestd/attestd.json"
  "$attestd" --config "$W/attestd/attestd.json" --port-file "$W/attestd/port" 2>"$W/attestd/log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$W/attestd/port" ] && break; sleep 0.05; done
  url=https://127.0.0.1:$(cat "$W/attestd/port")
  cat "$W/attestd/log"
  sock7=$W/vhsm7.sock
  "$vhsmd" --foreground --socket "$sock7" --keystore "$W/keystore7" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore7.anchor" 2>"$W/vhsmd7.log" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$sock7" ] && break; sleep 0.1; done
  [ -S "$sock7" ] || { cat "$W/vhsmd7.log"; exit 1; }

  step "7a. nitride attest: challenge, transfer key from vhsmd, a report binding both, EAR token"
  run "$nitride" attest --attestd "$url" --ca "$W/attestd/tls.pem" --provider sim --sim-dir "$W/chip" \
    --vhsm-socket "$sock7" --token-out "$W/token.jwt"
  echo "token: $(wc -c <"$W/token.jwt") bytes; attestd's JWKS:"
  curl -s --cacert "$W/attestd/tls.pem" "$url/.well-known/jwks.json" | jq -c '.keys[] | {kid, alg}'

  step "7b. Another launch configuration (different measurement) is refused, naming the check"
  "$nitride" sim set "$W/chip" --measurement "$(openssl rand -hex 48)" >/dev/null
  set +e
  "$nitride" attest --attestd "$url" --ca "$W/attestd/tls.pem" --provider sim --sim-dir "$W/chip" \
    --no-vhsm
  rc=$?
  set -e
  echo "exit code $rc (2: refused by policy)"
  [ "$rc" -eq 2 ]

  step "7c. Before rolling out a new policy: replay the recorded evidence against it"
  printf '{"measurements": ["%s"]}\n' "$(openssl rand -hex 48)" >"$W/attestd/candidate.json"
  run "$attestd" replay --config "$W/attestd/attestd.json" --policy "$W/attestd/candidate.json"
  curl -s --cacert "$W/attestd/tls.pem" "$url/metrics" | grep -E '^nitride_attestd_(tokens|failures)_total'
fi

kmsd=$B/src/kmsd/nitride-kmsd
if [ -x "$attestd" ] && [ -x "$kmsd" ] && [ "$(id -u)" = 0 ]; then
  step "8. Attested secret release (Case B): nitride-kmsd releases key X only to the VM its policy names"
  # Two genuine images of the fleet: attestd accepts both; the operator gives X to the first only.
  meas2=$(openssl rand -hex 48)
  "$nitride" sim set "$W/chip" --measurement "$meas" >/dev/null   # this VM: the first image
  K8=$W/kms; mkdir -p "$K8"
  printf '{"measurements": ["%s", "%s"]}\n' "$meas" "$meas2" >"$K8/att-policy.json"
  (umask 077; head -c 32 /dev/urandom >"$K8/challenge.key"; head -c 32 /dev/urandom >"$K8/kek"
   openssl rand -base64 32 | tr -d '\n' >"$K8/admin.token")
  cat >"$K8/attestd.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "tls": {"cert": "$W/attestd/tls.pem", "key": "$W/attestd/tls.key"},
  "challenge": {"secret": "challenge.key"},
  "token": {"keys_dir": "att-keys", "issuer": "https://attestd.demo", "audience": "nitride-kmsd"},
  "trust_anchors": ["$W/chip/ark.pem"],
  "policies": {"fleet": {"file": "att-policy.json"}}
}
EOF
  "$attestd" --config "$K8/attestd.json" --port-file "$K8/attestd.port" 2>"$K8/attestd.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$K8/attestd.port" ] && break; sleep 0.05; done
  [ -s "$K8/attestd.port" ] || { cat "$K8/attestd.log"; exit 1; }
  aurl=https://127.0.0.1:$(cat "$K8/attestd.port")
  cat >"$K8/kmsd.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "tls": {"cert": "$W/attestd/tls.pem", "key": "$W/attestd/tls.key"},
  "database": "kmsd.db",
  "kek_file": "kek",
  "release": {"keys_dir": "release-keys"},
  "attestd": {"jwks_url": "$aurl/.well-known/jwks.json", "ca_file": "$W/attestd/tls.pem",
              "issuer": "https://attestd.demo", "audience": "nitride-kmsd"},
  "admin": {"bearer_token_file": "admin.token"}
}
EOF
  run cat "$K8/kmsd.json"
  "$kmsd" --config "$K8/kmsd.json" --port-file "$K8/kmsd.port" 2>"$K8/kmsd.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$K8/kmsd.port" ] && break; sleep 0.05; done
  [ -s "$K8/kmsd.port" ] || { cat "$K8/kmsd.log"; exit 1; }
  kurl=https://127.0.0.1:$(cat "$K8/kmsd.port")
  KMS() { "$nitride" kms --url "$kurl" --ca "$W/attestd/tls.pem" --admin-token-file "$K8/admin.token" "$@"; }

  step "8a. The operator stores secret X (generated inside kmsd) with a release policy"
  cat >"$K8/x-policy.json" <<EOF
{"version": 1, "rules": {"measurement_in": ["$meas"], "debug_allowed": false}}
EOF
  run cat "$K8/x-policy.json"
  run KMS secret create demo-x --type aes256 --name x --generate --policy-file "$K8/x-policy.json"
  run KMS secret list

  step "8b. vhsmd pins kmsd's release keys and attestd's token keys: it trusts proofs, not root"
  curl -s --cacert "$W/attestd/tls.pem" "$kurl/v1/release-keys" >"$K8/kms-keys.json"
  curl -s --cacert "$W/attestd/tls.pem" "$aurl/.well-known/jwks.json" >"$K8/att-jwks.json"
  sock8=$W/vhsm8.sock
  "$vhsmd" --foreground --socket "$sock8" --keystore "$W/keystore8" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore8.anchor" --kms-keys "$K8/kms-keys.json" \
    --attestd-jwks "$K8/att-jwks.json" --attestd-issuer https://attestd.demo 2>"$W/vhsmd8.log" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$sock8" ] && break; sleep 0.1; done
  V8() { "$vhsm" --socket "$sock8" "$@"; }
  echo "payroll record 4711" >"$W/app.txt"

  step "8c. The agent daemon beside vhsmd: it serves kms/x (secret demo-x) on demand"
  agent_conf() {  # $1 = file, $2 = vhsmd socket
    cat >"$1" <<EOF
{
  "attestd": {"url": "$aurl", "ca": "$W/attestd/tls.pem"},
  "kms": {"url": "$kurl", "ca": "$W/attestd/tls.pem"},
  "vhsm_socket": "$2",
  "retry": {"deadline_s": 10},
  "secrets": [{"key": "kms/x", "secret_id": "demo-x"}]
}
EOF
  }
  agent_conf "$K8/agent.json" "$sock8"
  run cat "$K8/agent.json"
  "$nitride" agent --config "$K8/agent.json" --sim "$W/chip" 2>"$W/agent.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q Serving "$W/agent.log" 2>/dev/null && break; sleep 0.1; done
  cat "$W/agent.log"

  step "8d. Case B: the application asks vhsmd to encrypt with kms/x, which is not there yet"
  echo "vhsmd parks the call; the agent attests (challenge, report, EAR token), kmsd checks the token"
  echo "and X's policy and releases X sealed to vhsmd's one-shot transfer key; vhsmd imports it and"
  echo "completes the call. The agent only ever handles ciphertext."
  tokens() { curl -s --cacert "$W/attestd/tls.pem" "$aurl/metrics" | awk '/^nitride_attestd_tokens_total/ {s += $2} END {print s + 0}'; }
  t0=$(tokens)
  run V8 encrypt kms/x --in "$W/app.txt" --out "$W/app.ct"
  echo "agent: $(tail -n 2 "$W/agent.log")"
  n=$(( $(tokens) - t0 )); echo "attestation tokens issued: $n"; [ "$n" -eq 1 ]

  step "8e. Case A: the next calls are served locally, with no attestation"
  t0=$(tokens)
  run V8 decrypt kms/x --in "$W/app.ct"
  run V8 encrypt kms/x --in "$W/app.txt" --out "$W/app2.ct"
  n=$(( $(tokens) - t0 )); echo "attestation tokens issued: $n"; [ "$n" -eq 0 ]
  V8 key info kms/x | jq -c '{name, type, origin, latest_version, policy}'

  step "8f. Another launch configuration (a genuine image of the fleet, but not X's) asks for X: refused"
  "$nitride" sim set "$W/chip" --measurement "$meas2" >/dev/null
  sock8b=$W/vhsm8b.sock
  "$vhsmd" --foreground --socket "$sock8b" --keystore "$W/keystore8b" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore8b.anchor" --kms-keys "$K8/kms-keys.json" \
    --attestd-jwks "$K8/att-jwks.json" --attestd-issuer https://attestd.demo 2>"$W/vhsmd8b.log" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$sock8b" ] && break; sleep 0.1; done
  agent_conf "$K8/agent-b.json" "$sock8b"
  "$nitride" agent --config "$K8/agent-b.json" --sim "$W/chip" 2>"$W/agent-b.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q Serving "$W/agent-b.log" 2>/dev/null && break; sleep 0.1; done
  cat "$W/agent-b.log"
  set +e
  "$vhsm" --socket "$sock8b" encrypt kms/x --in "$W/app.txt" --out "$W/app-b.ct"
  rc=$?
  set -e
  echo "exit code $rc (13: refused by the service's policy; kmsd named the rule, expected and found)"
  [ "$rc" -eq 13 ]
  "$nitride" sim set "$W/chip" --measurement "$meas" >/dev/null

  step "8g. The audit chain: every release attempt and admin action, hash-chained and signed"
  run KMS audit show
  run KMS audit verify --release-keys "$K8/kms-keys.json"
fi

step "9. Confidential boot: measurements from images, ID blocks, and trusting a signer"
ovmf=/usr/share/ovmf/OVMF.fd
if [ -f "$ovmf" ]; then
  echo "9a. Debian's OVMF firmware, 2 vCPUs of type EPYC-Milan under QEMU (SNP_LAUNCH_UPDATE digest)"
  run "$nitride" measure --ovmf "$ovmf" --vcpus 2 --vcpu-type EPYC-Milan --policy-out "$W/fleet-policy.json"
  run cat "$W/fleet-policy.json"
  echo "Debian 12's OVMF.fd (OvmfPkgX64) has no kernel-hashes section: a kernel cannot be measured with it"
  set +e
  "$nitride" measure --ovmf "$ovmf" --vcpus 2 --vcpu-type EPYC-Milan --kernel "$kernel"
  rc=$?
  set -e
  echo "exit code $rc"
  [ "$rc" -ne 0 ]
  echo "A firmware image without SEV metadata has no launch digest: refused, not guessed"
  head -c 2097152 /dev/zero >"$W/not-ovmf.fd"
  set +e
  "$nitride" measure --ovmf "$W/not-ovmf.fd" --vcpus 1 --vcpu-type EPYC-Milan
  rc=$?
  set -e
  echo "exit code $rc"
  [ "$rc" -ne 0 ]
fi

echo
echo "9b. A policy that trusts the image signer (ID key digest) instead of a list of measurements"
idd=$(jq -r .id_key_digest "$W/idblock.json")
printf '{"id_key_digests": ["%s"], "min_guest_svn": 1, "allow_debug": false}\n' "$idd" \
  >"$W/signer-policy.json"
run cat "$W/signer-policy.json"
signer_verify() { # report file
  "$nitride" report get --provider sim --sim-dir "$W/chip" --nonce "$(openssl rand -hex 32)" \
    --extended --out "$1" --certs-dir "$W/certs9" >/dev/null
  run "$nitride" verify "$1" --certs "$W/certs9" --trust-anchor "$W/chip/ark.pem" \
    --policy "$W/signer-policy.json"
}
signer_verify "$W/r9a.bin"
echo "A new image (a new initrd): a new measurement and a new ID block, signed with the same key"
printf 'demo initrd v2\n' >"$W/initrd2.img"
vm2=("${vm[@]}")
vm2[5]=$W/initrd2.img
run_to "$W/idblock2.json" "$nitride" idblock create --from-measure "${vm2[@]}" --id-key "$W/id-key.pem" \
    --policy 0x30000 --family-id "$family" --image-id "$(openssl rand -hex 16)" --guest-svn 2 --json
jq '{id_key_digest, measurement, guest_svn}' "$W/idblock2.json"
launch2=("$nitride" sim launch "$W/chip" "${vm2[@]}" --policy 0x30000)
run "${launch2[@]}" --id-block "$(jq -r .id_block "$W/idblock2.json")" \
    --id-auth "$(jq -r .id_auth "$W/idblock2.json")"
echo "The same policy, unchanged, accepts the new image:"
signer_verify "$W/r9b.bin"
"$nitride" report show "$W/r9b.bin" --json | jq '{measurement, id_key_digest, guest_svn}'

echo
echo "9c. The firmware refuses a launch its ID block does not vouch for"
refuse() { # what, command...
  local what=$1; shift
  echo "$what:"
  set +e
  "$@" >/dev/null
  rc=$?
  set -e
  echo "exit code $rc"
  [ "$rc" -eq 2 ]
}
blk1=$(jq -r .id_block "$W/idblock.json") auth1=$(jq -r .id_auth "$W/idblock.json")
blk2=$(jq -r .id_block "$W/idblock2.json") auth2=$(jq -r .id_auth "$W/idblock2.json")
refuse "the first image's ID block for the new image" "${launch2[@]}" --id-block "$blk1" --id-auth "$auth1"
printf '%s' "$blk2" | base64 -d >"$W/tampered.blk"
printf '\x09' | dd of="$W/tampered.blk" bs=1 seek=$((0x54)) conv=notrunc status=none
tampered=$(base64 -w0 <"$W/tampered.blk")
refuse "the new ID block with its guest SVN raised by hand" "${launch2[@]}" --id-block "$tampered" --id-auth "$auth2"
refuse "the new ID block for a debug launch (policy 0xb0000)" \
  "$nitride" sim launch "$W/chip" "${vm2[@]}" --policy 0xb0000 --id-block "$blk2" --id-auth "$auth2"
echo "(the VM launched in step 1 again)"
"$nitride" sim launch "$W/chip" "${vm[@]}" --policy 0x30000 --host-data "$host_data" \
  --id-block "$blk1" --id-auth "$auth1" >/dev/null

if command -v cryptsetup >/dev/null; then
  step "10. A LUKS2 volume key sealed to this VM's SNP state (no KMS): seal, list, unlock"
  img=$W/volume.img
  truncate -s 32M "$img"
  printf 'demo passphrase' | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 "$img" -
  echo "$ cryptsetup luksFormat --type luks2 volume.img   (passphrase keyslot 0)"
  printf 'demo passphrase' | run "$nitride" luks seal "$img" --bind measurement,policy --sim-dir "$W/chip"
  run "$nitride" luks list "$img"
  echo "(this host has no device-mapper: --test checks that the unsealed key opens the keyslot)"
  run "$nitride" luks unlock "$img" data --test --sim-dir "$W/chip"
  echo "The same volume in the VM launched from the new initrd of step 9 (another measurement):"
  echo "the key stays sealed"
  run "$nitride" sim launch "$W/chip" "${vm2[@]}" --policy 0x30000 --host-data "$host_data" \
    --id-block "$blk2" --id-auth "$auth2"
  set +e
  "$nitride" luks unlock "$img" data --test --sim-dir "$W/chip"
  rc=$?
  set -e
  echo "exit code $rc"
  [ "$rc" -ne 0 ]
  "$nitride" sim launch "$W/chip" "${vm[@]}" --policy 0x30000 --host-data "$host_data" \
    --id-block "$blk1" --id-auth "$auth1" >/dev/null
fi

plugin=$B/src/luks/plugin/libcryptsetup-token-nitride.so
if command -v cryptsetup >/dev/null && [ -n "${kurl:-}" ]; then
  step "11. LUKS unlock after attestation: a KMS-released volume key, and a token that heals itself"
  # The VM of step 8 again (the measurement attestd and kmsd know), and a volume for it.
  "$nitride" sim set "$W/chip" --measurement "$meas" >/dev/null
  img2=$W/volume2.img
  truncate -s 32M "$img2"
  printf 'demo passphrase' | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 "$img2" -
  echo "$ cryptsetup luksFormat --type luks2 volume2.img   (passphrase keyslot 0)"
  # kmsd releases the volume key to either genuine image of the fleet, and (added by enroll)
  # only for this volume's LUKS UUID.
  printf '{"version": 1, "rules": {"measurement_in": ["%s", "%s"]}}\n' "$meas" "$meas2" >"$K8/vol-policy.json"
  echo "11a. enroll: kmsd generates the volume key; the attested release opens it in this process only;"
  echo "     a keyslot for it, and one token with a sealed slot (no network) and a remote slot"
  printf 'demo passphrase' | run "$nitride" luks enroll "$img2" --kms "$kurl" --attestd "$aurl" \
    --secret demo-volume --create --admin-token-file "$K8/admin.token" \
    --policy-file "$K8/vol-policy.json" --bind measurement,policy --ca "$W/attestd/tls.pem" \
    --sim-dir "$W/chip"
  run "$nitride" luks list "$img2"
  run KMS secret show demo-volume
  echo "11b. unlock: the sealed slot opens, no network"
  run "$nitride" luks unlock "$img2" data --test --ca "$W/attestd/tls.pem" --sim-dir "$W/chip"
  tokdir=$(cryptsetup --help | sed -n 's/^LUKS2 external token plugin path: \(.*\)\.$/\1/p')
  if [ "$(id -u)" = 0 ] && [ -d "$tokdir" ] && unshare -m true 2>/dev/null && [ -f "$plugin" ]; then
    echo "11c. Plain cryptsetup with the token plugin. Debian's cryptsetup 2.6 loads plugins only from"
    echo "     $tokdir: a private mount namespace puts this build's plugin there for the demo."
    mkdir -p "$W/plugins"
    cp "$plugin" "$W/plugins/"
    printf '{"provider": "sim", "ca_file": "%s"}\n' "$W/attestd/tls.pem" >"$W/luks.conf"
    # A sanitizer build's plugin needs its runtimes loaded first into (uninstrumented) cryptsetup,
    # as in tests/integration/cryptsetup-plugin.sh.
    san=$(ldd "$plugin" | awk '$1 ~ /^lib(asan|ubsan)\.so/ {print $3}' | paste -sd: -)
    cs() {
      printf '$ cryptsetup %s\n' "$*"
      NT_PRELOAD=$san NITRIDE_SIM_DIR=$W/chip NITRIDE_LUKS_CONF=$W/luks.conf \
        unshare -m --propagation private sh -c 'mount --bind "$0" "$1" && shift &&
          if [ -n "$NT_PRELOAD" ]; then export LD_PRELOAD=$NT_PRELOAD ASAN_OPTIONS=detect_leaks=0; fi &&
          exec cryptsetup "$@"' "$W/plugins" "$tokdir" "$@"
    }
    cs luksDump "$img2" | sed -n '/^Tokens:/,/^Digests:/p' | grep -v '^Digests:'
    cs open --token-only --test-passphrase -v "$img2"
  fi
  echo "11d. A kernel update: the VM now runs the fleet's second image. The sealed slot no longer"
  echo "     opens; unlock falls back to kmsd (attested release, audited as luks-reseal) and re-seals"
  "$nitride" sim set "$W/chip" --measurement "$meas2" >/dev/null
  run "$nitride" luks unlock "$img2" data --test --ca "$W/attestd/tls.pem" --sim-dir "$W/chip"
  echo "The next boot is local again, even with kmsd unreachable:"
  run "$nitride" luks unlock "$img2" data --test --no-remote --sim-dir "$W/chip"
  echo "kmsd's audit: the enrolment's release and the re-seal's, each with the VM's measurement"
  KMS audit show | grep -E "luks-(enroll|reseal)"
  "$nitride" sim set "$W/chip" --measurement "$meas" >/dev/null
fi

p11=$B/src/pkcs11/libvhsm-pkcs11.so
if [ -f "$p11" ] && ldd "$p11" | grep -qE 'lib(asan|ubsan)\.so'; then
  step "12. PKCS#11: skipped in a sanitizer build (pkcs11-tool is not instrumented; tests/integration/pkcs11.sh covers the module under ASan)"
elif command -v pkcs11-tool >/dev/null && [ -f "$p11" ]; then
  step "12. PKCS#11: standard tools use the vHSM through libvhsm-pkcs11.so; PINs are enforced by vhsmd"
  sock12=$W/vhsm12.sock
  "$vhsmd" --foreground --socket "$sock12" --keystore "$W/keystore12" --provider sim --sim-dir "$W/chip" \
    --freshness-anchor "file:$W/run/keystore12.anchor" 2>"$W/vhsmd12.log" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$sock12" ] && break; sleep 0.1; done
  export VHSM_PKCS11_SOCKETS=$sock12
  P11() { run pkcs11-tool --module "$p11" "$@"; }
  P11 --init-token --so-pin so-pin-4711 --label "demo token"
  P11 --init-pin --so-pin so-pin-4711 --pin 123456
  echo "A wrong PIN is counted by vhsmd (persistently; 10 tries, then locked):"
  set +e
  pkcs11-tool --module "$p11" --login --pin 999999 -O 2>&1 | grep -E "CKR_PIN_INCORRECT" | head -1
  set -e
  P11 --login --pin 123456 --keypairgen --key-type EC:prime256v1 --label demo-ec --id 01
  printf 'a document to sign\n' >"$W/doc"
  P11 --login --pin 123456 --sign -m ECDSA-SHA256 --id 01 -i "$W/doc" -o "$W/doc.sig" --signature-format openssl
  P11 --read-object --type pubkey --id 01 -o "$W/ec.der"
  openssl pkey -pubin -inform DER -in "$W/ec.der" -out "$W/ec.pem"
  echo "The signature, checked by plain OpenSSL with the exported public key:"
  run openssl dgst -sha256 -verify "$W/ec.pem" -signature "$W/doc.sig" "$W/doc"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/ca.key" 2>/dev/null
  openssl req -new -key "$W/ca.key" -subj /CN=demo-ec -out "$W/ec.csr" 2>/dev/null
  openssl x509 -req -in "$W/ec.csr" -signkey "$W/ca.key" -force_pubkey "$W/ec.pem" -days 1 \
    -outform DER -out "$W/ec-cert.der" 2>/dev/null
  P11 --login --pin 123456 --write-object "$W/ec-cert.der" --type cert --id 01 --label demo-ec-cert
  echo "Without a login, the token shows the certificate and the public key (not the private key):"
  P11 -O | grep -E "^(Certificate|Public Key|Private Key) Object|label:" | head -6
  echo "Key wrapping happens inside vhsmd: a KEK (wrap/unwrap only: a key that can decrypt data never"
  echo "wraps) wraps an extractable AES key (RFC 3394), and the wrapped bytes come back in as a new"
  echo "key; a non-extractable key cannot be wrapped:"
  P11 --login --pin 123456 --keygen --key-type AES:32 --label demo-kek --id 10 --usage-wrap
  P11 --login --pin 123456 --keygen --key-type AES:16 --label demo-tgt --id 11 --extractable
  P11 --login --pin 123456 --wrap -m AES-KEY-WRAP --id 10 --application-id 11 -o "$W/wrapped"
  echo "wrapped: $(stat -c %s "$W/wrapped") bytes"
  P11 --login --pin 123456 --unwrap -m AES-KEY-WRAP --id 10 -i "$W/wrapped" --key-type AES: \
    --application-id 12 --application-label demo-unwrapped
  set +e
  echo "wrapping the never-extractable KEK itself: $(pkcs11-tool --module "$p11" --login --pin 123456 \
    --wrap -m AES-KEY-WRAP --id 10 --application-id 10 -o "$W/wrapped2" 2>&1 |
    grep -oE "CKR_[A-Z_]+" | head -1)"
  set -e
  P11 -L | grep -E "token label|flags|PIN"
  unset VHSM_PKCS11_SOCKETS
fi

step "Demo complete."
