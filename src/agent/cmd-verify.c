/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: being written. */
#include "agent.h"
#include "core/log.h"

int cmd_verify(int argc, char **argv) {
    (void)argc;
    (void)argv;
    log_error("'nitride verify' is not built yet.");
    return NT_EXIT_USAGE;
}
