/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The measure options shared by measure, idblock create and sim launch (measure-opts.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "core/log.h"
#include "core/macro.h"
#include "measure-opts.h"

enum {
    ARG_OVMF = MEASURE_OPT_BASE,
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
};

static const struct option measure_options[] = {
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
};

void measure_opts_init(MeasureOpts *o) {
    *o = (MeasureOpts){
        .in = {.vcpus = 1, .vmm = SNP_VMM_QEMU, .guest_features = 0x1},
        .family = -1,
        .model = -1,
        .stepping = -1,
    };
}

struct option *measure_opts_merge(const struct option *extra) {
    size_t n = 0;
    while (extra[n].name)
        n++;
    struct option *all = calloc(ELEMENTSOF(measure_options) + n + 1, sizeof *all);
    if (!all)
        return NULL;
    memcpy(all, measure_options, sizeof measure_options);
    memcpy(all + ELEMENTSOF(measure_options), extra, n * sizeof *extra);
    return all;
}

int measure_parse_u64(const char *s, uint64_t max, uint64_t *ret) {
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

int measure_opts_parse(MeasureOpts *o, int c, const char *arg) {
    uint64_t v;

    if (c < ARG_OVMF || c > ARG_GUEST_FEATURES)
        return 0;
    o->any = true;
    switch (c) {
    case ARG_OVMF:
        o->in.ovmf_path = arg;
        break;
    case ARG_KERNEL:
        o->in.kernel_path = arg;
        break;
    case ARG_INITRD:
        o->in.initrd_path = arg;
        break;
    case ARG_APPEND:
        o->in.append = arg;
        break;
    case ARG_VCPUS:
        if (measure_parse_u64(arg, SNP_MEASURE_MAX_VCPUS, &v) < 0 || v == 0) {
            log_error("--vcpus: expected 1..%u, got '%s'.", SNP_MEASURE_MAX_VCPUS, arg);
            return -NT_EXIT_USAGE;
        }
        o->in.vcpus = (unsigned)v;
        break;
    case ARG_VCPU_TYPE:
        o->vcpu_type = arg;
        break;
    case ARG_VCPU_SIG:
        if (measure_parse_u64(arg, UINT32_MAX, &v) < 0) {
            log_error("--vcpu-sig: expected a 32-bit number, got '%s'.", arg);
            return -NT_EXIT_USAGE;
        }
        o->in.vcpu_sig = (uint32_t)v;
        o->have_sig = true;
        break;
    case ARG_VCPU_FAMILY:
    case ARG_VCPU_MODEL:
    case ARG_VCPU_STEPPING:
        if (measure_parse_u64(arg, 0xffff, &v) < 0) {
            log_error("--vcpu-%s: expected a number, got '%s'.",
                      c == ARG_VCPU_FAMILY  ? "family"
                      : c == ARG_VCPU_MODEL ? "model"
                                            : "stepping",
                      arg);
            return -NT_EXIT_USAGE;
        }
        *(c == ARG_VCPU_FAMILY  ? &o->family
          : c == ARG_VCPU_MODEL ? &o->model
                                : &o->stepping) = (int64_t)v;
        break;
    case ARG_VMM:
        o->in.vmm = snp_vmm_from_string(arg);
        if (o->in.vmm < 0) {
            log_error("--vmm: expected qemu, ec2 or gce, got '%s'.", arg);
            return -NT_EXIT_USAGE;
        }
        break;
    case ARG_GUEST_FEATURES:
        if (measure_parse_u64(arg, UINT64_MAX, &o->in.guest_features) < 0) {
            log_error("--guest-features: expected a number, got '%s'.", arg);
            return -NT_EXIT_USAGE;
        }
        break;
    default:
        return 0;
    }
    return 1;
}

int measure_opts_run(MeasureOpts *o, SnpMeasureResult *ret) {
    if (!o->in.ovmf_path) {
        log_error("--ovmf FILE is required.");
        return NT_EXIT_USAGE;
    }
    bool fms = o->family >= 0 || o->model >= 0 || o->stepping >= 0;
    if ((o->vcpu_type != NULL) + o->have_sig + fms > 1) {
        log_error("Give the vCPU as one of --vcpu-type, --vcpu-sig or "
                  "--vcpu-family/--vcpu-model/--vcpu-stepping.");
        return NT_EXIT_USAGE;
    }
    if (o->vcpu_type && snp_vcpu_sig_from_name(o->vcpu_type, &o->in.vcpu_sig) < 0) {
        log_error("Unknown --vcpu-type '%s' (EPYC, EPYC-v1..v4, EPYC-Rome, EPYC-Milan, "
                  "EPYC-Genoa, EPYC-Turin, with -vN versions).",
                  o->vcpu_type);
        return NT_EXIT_USAGE;
    }
    if (fms) {
        if (o->family < 0 || o->model < 0 || o->stepping < 0 ||
            snp_cpu_sig((unsigned)o->family, (unsigned)o->model, (unsigned)o->stepping,
                        &o->in.vcpu_sig) < 0) {
            log_error("--vcpu-family (0..270), --vcpu-model (0..255) and --vcpu-stepping "
                      "(0..15) are needed together.");
            return NT_EXIT_USAGE;
        }
    }
    if (o->in.vmm == SNP_VMM_QEMU && !o->vcpu_type && !o->have_sig && !fms) {
        log_error("--vmm qemu needs the vCPU type (--vcpu-type, --vcpu-sig or "
                  "--vcpu-family/--vcpu-model/--vcpu-stepping): QEMU puts its signature in RDX.");
        return NT_EXIT_USAGE;
    }
    char err[SNP_OVMF_ERR_MAX];
    int r = snp_measure(&o->in, ret, err);
    if (r < 0) {
        log_error("%s", err);
        return r == -EBADMSG ? NT_EXIT_INVALID : r == -EINVAL ? NT_EXIT_USAGE : NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

int measure_getopt(int argc, char **argv, const struct option *options, MeasureOpts *o) {
    for (;;) {
        int c = getopt_long(argc, argv, "h", options, NULL);
        if (c < 0)
            return c;
        int r = measure_opts_parse(o, c, optarg);
        if (r < 0) {
            o->exit_code = -r;
            return MEASURE_OPT_INVALID;
        }
        if (r == 0)
            return c;
    }
}
