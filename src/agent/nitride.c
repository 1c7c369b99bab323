/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride: the agent inside the VM. This file only dispatches subcommands; each lives in its own
 * cmd-*.c. Exit codes are documented in agent.h.
 */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "config.h"
#include "core/log.h"
#include "core/secret.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"agent", cmd_agent, "agent --config FILE [--once] (daemon: keys for vhsmd from nitride-kmsd)"},
    {"attest", cmd_attest, "attest --attestd URL [--policy-id ID] [--no-vhsm] [--json] ..."},
    {"fetch", cmd_fetch, "fetch SECRET_ID --attestd URL --kms URL [--as NAME] ... (into vhsmd)"},
    {"idblock", cmd_idblock, "idblock create --measurement HEX|--from-measure ... --id-key K ..."},
    {"kms", cmd_kms, "kms [--url U] secret|policy|audit ... (nitride-kmsd admin)"},
    {"luks", cmd_luks, "luks seal|list|remove|unlock DEVICE ... (LUKS2 volumes, docs/luks.md)"},
    {"measure", cmd_measure, "measure --ovmf FILE [--kernel F] [--vcpus N] [--vcpu-type T] ..."},
    {"report", cmd_report, "report show FILE [--json] | report get [--provider P] ..."},
    {"sim", cmd_sim, "sim init|launch|set|show DIR ... (the simulated SNP firmware)"},
    {"verify", cmd_verify, "verify REPORT [--certs DIR|--cert FILE...] [--policy FILE] ..."},
};

static void usage(FILE *f) {
    fprintf(f, "Usage: nitride COMMAND [ARGS...]\n\nCommands:\n");
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nExit codes: 0 ok, 1 invalid evidence, 2 policy mismatch, 3 usage, 4 I/O error,\n"
               "5 no evidence provider, 13 refused by a service (fetch), 14 service unavailable "
               "(fetch).\n");
}

int main(int argc, char **argv) {
    log_set_prefix("nitride");
    (void)nt_harden_process();
    if (argc < 2) {
        usage(stderr);
        return NT_EXIT_USAGE;
    }
    if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
        usage(stdout);
        return NT_EXIT_OK;
    }
    if (streq(argv[1], "--version")) {
        printf("nitride %s\n", NT_VERSION);
        return NT_EXIT_OK;
    }
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (streq(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    log_error("Unknown command '%s'. Try 'nitride --help'.", argv[1]);
    return NT_EXIT_USAGE;
}
