/* SPDX-License-Identifier: Apache-2.0 */
/* The vhsmd of the PKCS#11 module's cmocka tests (pkcs11-test.c, pkcs11-wrap-test.c): started
 * from $P11T_VHSMD on $P11T_DIR/vhsm.sock with a simulated chip, stopped with SIGTERM (then
 * SIGKILL). The including file may define P11H_VHSMD_ARGS (more options, each followed by a
 * comma) before including it; vhsmd_extra_arg adds one option at run time. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P11H_VHSMD_ARGS
#define P11H_VHSMD_ARGS
#endif

static CK_FUNCTION_LIST *F;
static pid_t vhsmd_pid;
static char sock_path[512];
static const char *vhsmd_extra_arg; /* one more vhsmd option, or NULL */

static void vhsmd_start(void) {
    const char *dir = getenv("P11T_DIR");
    char sim[512], ks[512], anchor[512], log[512];
    snprintf(sim, sizeof(sim), "%s/sim", dir);
    snprintf(ks, sizeof(ks), "file:%s/anchor", dir);
    snprintf(anchor, sizeof(anchor), "%s/state/keystore", dir);
    snprintf(log, sizeof(log), "%s/vhsmd.log", dir);
    snprintf(sock_path, sizeof(sock_path), "%s/vhsm.sock", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execl(getenv("P11T_VHSMD"), "vhsmd", "--foreground", "--socket", sock_path, "--keystore",
              anchor, "--provider", "sim", "--sim-dir", sim, "--freshness-anchor", ks, "--threads",
              "2", P11H_VHSMD_ARGS vhsmd_extra_arg, (char *)NULL);
        _exit(127);
    }
    vhsmd_pid = pid;
    /* up once a connection is accepted: the socket file exists from bind(), before listen(),
     * and a sanitizer build on a loaded machine can take seconds in between */
    for (int i = 0; i < 2400; i++) {
        struct stat st;
        if (stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            assert_true(strlen(sock_path) < sizeof(sa.sun_path));
            memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
            bool up = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
            if (fd >= 0)
                close(fd);
            if (up)
                return;
        }
        assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
        usleep(25000);
    }
    fail_msg("vhsmd did not come up");
}

static void vhsmd_stop(void) {
    if (vhsmd_pid <= 0)
        return;
    kill(vhsmd_pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 600; i++) {
        if (waitpid(vhsmd_pid, &st, WNOHANG) == vhsmd_pid) {
            vhsmd_pid = 0;
            return;
        }
        usleep(50000);
    }
    kill(vhsmd_pid, SIGKILL);
    waitpid(vhsmd_pid, &st, 0);
    vhsmd_pid = 0;
}
