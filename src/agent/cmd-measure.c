/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride measure: the SEV-SNP launch MEASUREMENT of a guest, from the images the VMM loads
 * (docs/measure.md, src/snp/measure.h).
 *
 *   measure --ovmf FILE [--kernel FILE [--initrd FILE] [--append STR]] [--vcpus N]
 *           [--vcpu-type NAME | --vcpu-sig HEX | --vcpu-family N --vcpu-model N
 *           --vcpu-stepping N] [--vmm qemu|ec2|gce] [--guest-features HEX]
 *           [--base64 | --json] [--policy-out FILE]
 *
 * Exit codes (agent.h): firmware that cannot be launched as an SNP guest 1, usage (including a
 * kernel with firmware that cannot hash it) 3, I/O 4.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "agent.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "snp/measure.h"
#include "verify/policy.h"

#define POLICY_FILE_MAX (1024u * 1024u)

static void measure_usage(FILE *f) {
    fprintf(f,
            "Usage: nitride measure --ovmf FILE [--kernel FILE [--initrd FILE] [--append STR]]\n"
            "                       [--vcpus N] [--vcpu-type NAME | --vcpu-sig HEX |\n"
            "                        --vcpu-family N --vcpu-model N --vcpu-stepping N]\n"
            "                       [--vmm qemu|ec2|gce] [--guest-features HEX]\n"
            "                       [--base64 | --json] [--policy-out FILE]\n"
            "\n"
            "Computes the SEV-SNP launch MEASUREMENT (48 bytes, hex by default) of a guest\n"
            "started with this OVMF image (and, for measured direct boot, kernel, initrd and\n"
            "command line), N vCPUs of the given CPU type, and SEV_FEATURES (default 0x1).\n"
            "A vCPU type is needed for --vmm qemu (QEMU puts the CPU signature in RDX):\n"
            "EPYC, EPYC-v1..v4, EPYC-Rome[-vN], EPYC-Milan[-vN], EPYC-Genoa[-vN], EPYC-Turin.\n"
            "--json prints every input's hash; --policy-out adds the measurement to the\n"
            "\"measurements\" of an appraisal policy (docs/policy.md), creating it if needed.\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
    char *end = NULL;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -EINVAL;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || !end || *end || v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}

static int policy_add(const char *path, const char *hex) {
    _cleanup_free_ uint8_t *text = NULL;
    size_t len = 0;
    json_auto_t *root = NULL;
    int r = read_full_file(path, POLICY_FILE_MAX, &text, &len);
    if (r == -ENOENT)
        root = json_object();
    else if (r < 0) {
        log_error("Failed to read policy '%s': %s", path, strerror(-r));
        return NT_EXIT_IO;
    } else {
        json_error_t jerr;
        root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root || !json_is_object(root)) {
            log_error("Policy '%s' is not a JSON object (%s); left unchanged.", path,
                      root ? "not an object" : jerr.text);
            return NT_EXIT_USAGE;
        }
    }
    if (!root)
        return log_oom(), NT_EXIT_IO;
    json_t *m = json_object_get(root, "measurements");
    if (!m) {
        m = json_array();
        if (!m || json_object_set_new(root, "measurements", m) < 0)
            return log_oom(), NT_EXIT_IO;
    } else if (!json_is_array(m)) {
        log_error("Policy '%s': \"measurements\" is not an array; left unchanged.", path);
        return NT_EXIT_USAGE;
    }
    bool present = false;
    size_t i;
    json_t *v;
    json_array_foreach(m, i, v) if (json_is_string(v) && strcasecmp(json_string_value(v), hex) == 0)
        present = true;
    if (!present && json_array_append_new(m, json_string(hex)) < 0)
        return log_oom(), NT_EXIT_IO;

    _cleanup_free_ char *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!out)
        return log_oom(), NT_EXIT_IO;
    /* The result must be a valid appraisal policy: refuse to write one the verifier would not
     * load (e.g. an unknown key already in the file). */
    _cleanup_(nt_policy_freep) NtPolicy *p = NULL;
    _cleanup_free_ char *perr = NULL;
    r = nt_policy_parse(out, strlen(out), &p, &perr);
    if (r < 0) {
        log_error("Policy '%s' would not be valid (%s); left unchanged.", path,
                  perr ? perr : strerror(-r));
        return NT_EXIT_USAGE;
    }
    size_t olen = strlen(out);
    _cleanup_free_ char *withnl = malloc(olen + 2);
    if (!withnl)
        return log_oom(), NT_EXIT_IO;
    memcpy(withnl, out, olen);
    withnl[olen] = '\n';
    r = write_file_atomic(path, withnl, olen + 1, 0644);
    if (r < 0) {
        log_error("Failed to write policy '%s': %s", path, strerror(-r));
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

static int print_json(const SnpMeasureInput *in, const SnpMeasureResult *res, const char *hex) {
    char h[SNP_MEASUREMENT_SIZE * 2 + 1];
    json_auto_t *j = json_object();
    if (!j)
        return log_oom(), NT_EXIT_IO;
    char sig[16], feat[24], eip[16];
    snprintf(sig, sizeof(sig), "0x%08" PRIx32, in->vcpu_sig);
    snprintf(feat, sizeof(feat), "0x%" PRIx64, in->guest_features);
    snprintf(eip, sizeof(eip), "0x%08" PRIx32, res->sev_es_reset_eip);
    int r = 0;
    r |= json_object_set_new(j, "measurement", json_string(hex));
    hex_encode(res->ovmf_sha256, 32, h);
    r |= json_object_set_new(j, "ovmf_sha256", json_string(h));
    hex_encode(res->ovmf_digest, SNP_MEASUREMENT_SIZE, h);
    r |= json_object_set_new(j, "ovmf_launch_digest", json_string(h));
    r |= json_object_set_new(j, "ovmf_size", json_integer((json_int_t)res->ovmf_size));
    r |= json_object_set_new(j, "sev_es_reset_eip", json_string(eip));
    if (res->direct_boot) {
        hex_encode(res->kernel_sha256, 32, h);
        r |= json_object_set_new(j, "kernel_sha256", json_string(h));
        hex_encode(res->initrd_sha256, 32, h);
        r |= json_object_set_new(j, "initrd_sha256", json_string(h));
        hex_encode(res->cmdline_sha256, 32, h);
        r |= json_object_set_new(j, "cmdline_sha256", json_string(h));
    }
    r |= json_object_set_new(j, "vcpus", json_integer(in->vcpus));
    r |= json_object_set_new(j, "vcpu_sig", json_string(sig));
    r |= json_object_set_new(j, "vmm", json_string(snp_vmm_to_string(in->vmm)));
    r |= json_object_set_new(j, "guest_features", json_string(feat));
    if (r != 0 || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
        return log_oom(), NT_EXIT_IO;
    fputc('\n', stdout);
    return NT_EXIT_OK;
}

int cmd_measure(int argc, char **argv) {
    enum {
        ARG_OVMF = 0x100,
        ARG_KERNEL,
        ARG_INITRD,
        ARG_APPEND,
        ARG_VCPUS,
        ARG_VCPU_TYPE,
        ARG_VCPU_SIG,
        ARG_VCPU_FAMILY,
        ARG_VCPU_MODEL,
        ARG_VCPU_STEPPING,
        ARG_VMM,
        ARG_GUEST_FEATURES,
        ARG_BASE64,
        ARG_JSON,
        ARG_POLICY_OUT,
    };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"ovmf", required_argument, NULL, ARG_OVMF},
        {"kernel", required_argument, NULL, ARG_KERNEL},
        {"initrd", required_argument, NULL, ARG_INITRD},
        {"append", required_argument, NULL, ARG_APPEND},
        {"vcpus", required_argument, NULL, ARG_VCPUS},
        {"vcpu-type", required_argument, NULL, ARG_VCPU_TYPE},
        {"vcpu-sig", required_argument, NULL, ARG_VCPU_SIG},
        {"vcpu-family", required_argument, NULL, ARG_VCPU_FAMILY},
        {"vcpu-model", required_argument, NULL, ARG_VCPU_MODEL},
        {"vcpu-stepping", required_argument, NULL, ARG_VCPU_STEPPING},
        {"vmm", required_argument, NULL, ARG_VMM},
        {"guest-features", required_argument, NULL, ARG_GUEST_FEATURES},
        {"base64", no_argument, NULL, ARG_BASE64},
        {"json", no_argument, NULL, ARG_JSON},
        {"policy-out", required_argument, NULL, ARG_POLICY_OUT},
        {},
    };
    SnpMeasureInput in = {.vcpus = 1, .vmm = SNP_VMM_QEMU, .guest_features = 0x1};
    const char *vcpu_type = NULL, *policy_out = NULL;
    bool have_sig = false, b64 = false, json = false;
    int64_t family = -1, model = -1, stepping = -1;
    uint64_t v;
    int c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        switch (c) {
        case 'h':
            measure_usage(stdout);
            return NT_EXIT_OK;
        case ARG_OVMF:
            in.ovmf_path = optarg;
            break;
        case ARG_KERNEL:
            in.kernel_path = optarg;
            break;
        case ARG_INITRD:
            in.initrd_path = optarg;
            break;
        case ARG_APPEND:
            in.append = optarg;
            break;
        case ARG_VCPUS:
            if (parse_u64(optarg, SNP_MEASURE_MAX_VCPUS, &v) < 0 || v == 0) {
                log_error("--vcpus: expected 1..%u, got '%s'.", SNP_MEASURE_MAX_VCPUS, optarg);
                return NT_EXIT_USAGE;
            }
            in.vcpus = (unsigned)v;
            break;
        case ARG_VCPU_TYPE:
            vcpu_type = optarg;
            break;
        case ARG_VCPU_SIG:
            if (parse_u64(optarg, UINT32_MAX, &v) < 0) {
                log_error("--vcpu-sig: expected a 32-bit number, got '%s'.", optarg);
                return NT_EXIT_USAGE;
            }
            in.vcpu_sig = (uint32_t)v;
            have_sig = true;
            break;
        case ARG_VCPU_FAMILY:
        case ARG_VCPU_MODEL:
        case ARG_VCPU_STEPPING:
            if (parse_u64(optarg, 0xffff, &v) < 0) {
                log_error("%s: expected a number, got '%s'.", argv[optind - 1], optarg);
                return NT_EXIT_USAGE;
            }
            *(c == ARG_VCPU_FAMILY  ? &family
              : c == ARG_VCPU_MODEL ? &model
                                    : &stepping) = (int64_t)v;
            break;
        case ARG_VMM:
            in.vmm = snp_vmm_from_string(optarg);
            if (in.vmm < 0) {
                log_error("--vmm: expected qemu, ec2 or gce, got '%s'.", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_GUEST_FEATURES:
            if (parse_u64(optarg, UINT64_MAX, &in.guest_features) < 0) {
                log_error("--guest-features: expected a number, got '%s'.", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_BASE64:
            b64 = true;
            break;
        case ARG_JSON:
            json = true;
            break;
        case ARG_POLICY_OUT:
            policy_out = optarg;
            break;
        default:
            measure_usage(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        log_error("Unexpected argument '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }
    if (!in.ovmf_path) {
        log_error("--ovmf FILE is required.");
        measure_usage(stderr);
        return NT_EXIT_USAGE;
    }
    if (b64 && json) {
        log_error("--base64 and --json are exclusive.");
        return NT_EXIT_USAGE;
    }
    bool fms = family >= 0 || model >= 0 || stepping >= 0;
    if ((vcpu_type != NULL) + have_sig + fms > 1) {
        log_error("Give the vCPU as one of --vcpu-type, --vcpu-sig or "
                  "--vcpu-family/--vcpu-model/--vcpu-stepping.");
        return NT_EXIT_USAGE;
    }
    if (vcpu_type && snp_vcpu_sig_from_name(vcpu_type, &in.vcpu_sig) < 0) {
        log_error("Unknown --vcpu-type '%s' (EPYC, EPYC-v1..v4, EPYC-Rome, EPYC-Milan, "
                  "EPYC-Genoa, EPYC-Turin, with -vN versions).",
                  vcpu_type);
        return NT_EXIT_USAGE;
    }
    if (fms) {
        if (family < 0 || model < 0 || stepping < 0 ||
            snp_cpu_sig((unsigned)family, (unsigned)model, (unsigned)stepping, &in.vcpu_sig) < 0) {
            log_error("--vcpu-family (0..270), --vcpu-model (0..255) and --vcpu-stepping "
                      "(0..15) are needed together.");
            return NT_EXIT_USAGE;
        }
    }
    if (in.vmm == SNP_VMM_QEMU && !vcpu_type && !have_sig && !fms) {
        log_error("--vmm qemu needs the vCPU type (--vcpu-type, --vcpu-sig or "
                  "--vcpu-family/--vcpu-model/--vcpu-stepping): QEMU puts its signature in RDX.");
        return NT_EXIT_USAGE;
    }

    SnpMeasureResult res;
    char err[SNP_OVMF_ERR_MAX];
    int r = snp_measure(&in, &res, err);
    if (r < 0) {
        log_error("%s", err);
        return r == -EBADMSG ? NT_EXIT_INVALID : r == -EINVAL ? NT_EXIT_USAGE : NT_EXIT_IO;
    }

    char hex[SNP_MEASUREMENT_SIZE * 2 + 1];
    hex_encode(res.measurement, SNP_MEASUREMENT_SIZE, hex);
    if (json)
        r = print_json(&in, &res, hex);
    else if (b64) {
        _cleanup_free_ char *s = NULL;
        if (base64_encode_alloc(res.measurement, SNP_MEASUREMENT_SIZE, &s) < 0)
            return log_oom(), NT_EXIT_IO;
        printf("%s\n", s);
        r = NT_EXIT_OK;
    } else {
        printf("%s\n", hex);
        r = NT_EXIT_OK;
    }
    if (r != NT_EXIT_OK)
        return r;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("Failed to write to standard output.");
        return NT_EXIT_IO;
    }
    if (policy_out)
        return policy_add(policy_out, hex);
    return NT_EXIT_OK;
}
