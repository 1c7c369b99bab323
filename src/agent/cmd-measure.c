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
#include "measure-opts.h"
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
        ARG_BASE64 = 0x100,
        ARG_JSON,
        ARG_POLICY_OUT,
    };
    static const struct option own[] = {
        {"help", no_argument, NULL, 'h'},
        {"base64", no_argument, NULL, ARG_BASE64},
        {"json", no_argument, NULL, ARG_JSON},
        {"policy-out", required_argument, NULL, ARG_POLICY_OUT},
        {},
    };
    _cleanup_free_ struct option *options = measure_opts_merge(own);
    const char *policy_out = NULL;
    bool b64 = false, json = false;
    MeasureOpts mo;
    int c, r;

    if (!options)
        return log_oom(), NT_EXIT_IO;
    measure_opts_init(&mo);
    optind = 0;
    while ((c = measure_getopt(argc, argv, options, &mo)) >= 0) {
        switch (c) {
        case MEASURE_OPT_INVALID:
            return mo.exit_code;
        case 'h':
            measure_usage(stdout);
            return NT_EXIT_OK;
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
    if (!mo.in.ovmf_path) {
        log_error("--ovmf FILE is required.");
        measure_usage(stderr);
        return NT_EXIT_USAGE;
    }
    if (b64 && json) {
        log_error("--base64 and --json are exclusive.");
        return NT_EXIT_USAGE;
    }

    SnpMeasureResult res;
    r = measure_opts_run(&mo, &res);
    if (r != NT_EXIT_OK)
        return r;
    const SnpMeasureInput in = mo.in;

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
