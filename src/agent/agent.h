/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The nitride agent's subcommands. Each takes the arguments after its own name (argv[0] is the
 * subcommand name) and returns a process exit code:
 *   0 success; 1 invalid evidence (bad signature, chain, malformed report); 2 policy mismatch;
 *   3 usage error; 4 I/O or system error; 5 no evidence provider usable; and, for `nitride fetch`,
 *   the codes `vhsm` uses for a service's answer: 13 refused by a service's policy (kmsd's release
 *   policy or token check, attestd's appraisal policy), 14 a service unavailable within the
 *   deadline.
 */
#pragma once

enum {
    NT_EXIT_OK = 0,
    NT_EXIT_INVALID = 1,
    NT_EXIT_POLICY = 2,
    NT_EXIT_USAGE = 3,
    NT_EXIT_IO = 4,
    NT_EXIT_NO_PROVIDER = 5,
    NT_EXIT_REFUSED = 13,     /* as vhsm's EXIT_REFUSED (vhsmd status 19) */
    NT_EXIT_UNAVAILABLE = 14, /* as vhsm's EXIT_UNAVAILABLE */
};

int cmd_agent(int argc, char **argv);  /* nitride agent --config FILE (cmd-agent.c) */
int cmd_attest(int argc, char **argv); /* nitride attest --attestd URL ... (cmd-attest.c) */
int cmd_fetch(int argc,
              char **argv); /* nitride fetch SECRET_ID --attestd URL --kms URL (cmd-fetch.c) */
int cmd_kms(int argc, char **argv);    /* nitride kms secret|policy|audit ... (cmd-kms.c) */
int cmd_luks(int argc, char **argv);   /* nitride luks seal|list|remove|unlock (cmd-luks.c) */
int cmd_report(int argc, char **argv); /* nitride report show|get ... (cmd-report.c) */
int cmd_sim(int argc, char **argv);    /* nitride sim init|show|set ... (cmd-sim.c) */
int cmd_verify(int argc, char **argv); /* nitride verify ... (cmd-verify.c) */

/* nitride idblock create ... (cmd-idblock.c) */
int cmd_idblock(int argc, char **argv);
/* nitride measure --ovmf FILE ... (cmd-measure.c) */
int cmd_measure(int argc, char **argv);
