/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The launch inputs of `nitride measure` (--ovmf, --kernel, --initrd, --append, --vcpus,
 * --vcpu-type | --vcpu-sig | --vcpu-family/--vcpu-model/--vcpu-stepping, --vmm,
 * --guest-features), shared by every command that computes a launch measurement from images
 * (measure, idblock create --from-measure, sim launch) so that they all read them alike.
 */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "snp/measure.h"

/* getopt values of the measure options: MEASURE_OPT_BASE..MEASURE_OPT_BASE+0xff. */
#define MEASURE_OPT_BASE 0x1000

typedef struct MeasureOpts {
    SnpMeasureInput in;
    const char *vcpu_type;
    bool have_sig;
    bool any; /* some measure option was given */
    int64_t family, model, stepping;
    int exit_code; /* of the last MEASURE_OPT_INVALID */
} MeasureOpts;

void measure_opts_init(MeasureOpts *o);
/* The measure options followed by extra (both {}-terminated), malloc'd; NULL on OOM. */
struct option *measure_opts_merge(const struct option *extra);
/* Handles one getopt result. Returns 1 (handled), 0 (not a measure option), or an NT_EXIT_*
 * code < 0 negated (a bad value, logged). */
int measure_opts_parse(MeasureOpts *o, int c, const char *arg);
/* getopt_long(argc, argv, "h", options) that applies the measure options to o itself: returns
 * the next other option, -1 at the end, or MEASURE_OPT_INVALID after logging a measure option's
 * invalid value (its exit code in o->exit_code). options from measure_opts_merge(). */
#define MEASURE_OPT_INVALID (MEASURE_OPT_BASE + 0xff)
int measure_getopt(int argc, char **argv, const struct option *options, MeasureOpts *o);
/* A whole unsigned number (decimal, 0x hex or 0 octal, no sign) up to max: 0, or -EINVAL. */
int measure_parse_u64(const char *s, uint64_t max, uint64_t *ret);
/* Checks the combination and computes the measurement. Returns NT_EXIT_OK or an exit code
 * (logged): usage 3, firmware that cannot be launched as an SNP guest 1, I/O 4. */
int measure_opts_run(MeasureOpts *o, SnpMeasureResult *ret);
