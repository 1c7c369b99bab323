/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the benchmarks: see common.h. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *bench_name = "bench";

#define MAX_PIDS 16
static pid_t pids[MAX_PIDS];
static size_t n_pids;

void bench_register_pid(pid_t pid) {
    if (n_pids < MAX_PIDS)
        pids[n_pids++] = pid;
}

_Noreturn void bench_die(const char *what) {
    fprintf(stderr, "%s: %s failed\n", bench_name, what);
    for (size_t i = 0; i < n_pids; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
    exit(2);
}

void bench_stop_all(void) {
    for (size_t i = 0; i < n_pids; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    for (size_t i = 0; i < n_pids; i++)
        if (pids[i] > 0)
            waitpid(pids[i], NULL, 0);
    n_pids = 0;
}

double bench_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, size_t n) {
    qsort(v, n, sizeof *v, bench_cmp_double);
    return v[n / 2];
}

double bench_percentile(double *v, size_t n, double p) {
    size_t i = (size_t)((double)n * p / 100.0);
    qsort(v, n, sizeof *v, bench_cmp_double);
    return v[i < n ? i : n - 1];
}

void bench_write_text(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        bench_die(path);
    close(fd);
}

unsigned bench_start_daemon(char *const argv[], const char *port_file, const char *log,
                            pid_t *ret_pid) {
    unsigned port = 0;
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork");
    if (pid == 0) {
        int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    bench_register_pid(pid);
    for (int i = 0; i < 200 && !port; i++) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            if (fscanf(f, "%u", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (!port) {
            if (waitpid(pid, NULL, WNOHANG) == pid)
                break;
            usleep(50000);
        }
    }
    if (!port) {
        fprintf(stderr, "%s: %s did not start%s%s\n", bench_name, argv[0], log ? "; see " : "",
                log ? log : "");
        bench_die("starting a daemon");
    }
    if (ret_pid)
        *ret_pid = pid;
    return port;
}

double bench_cpu_seconds(pid_t pid) {
    char path[64], buf[1024];
    unsigned long utime = 0, stime = 0;
    size_t n;
    FILE *f;

    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/stat");
    else
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields 14 and 15 (utime, stime), counted after the ")" that ends the command name. */
    const char *p = strrchr(buf, ')');
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

void bench_remove_tree(const char *dir) {
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (system(rm) != 0)
        fprintf(stderr, "%s: could not remove %s\n", bench_name, dir);
}

void bench_run(const char *cmd) {
    if (system(cmd) != 0) {
        fprintf(stderr, "bench: command failed: %s\n", cmd);
        bench_die("a setup command");
    }
}

void bench_make_tls(const char *dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && exec >/dev/null 2>&1 && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
             "-out ca.pem -days 2 -subj /CN=ca -addext basicConstraints=critical,CA:TRUE "
             "-addext keyUsage=keyCertSign && "
             "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > tls.ext && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key "
             "-out tls.csr -subj /CN=127.0.0.1 && "
             "openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-out tls.pem -extfile tls.ext",
             dir);
    bench_run(cmd);
}

bool bench_have(const char *cmd_name) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "command -v '%s' >/dev/null 2>&1", cmd_name);
    return system(cmd) == 0;
}

unsigned bench_start_tang(const char *db_dir, const char *port_file, pid_t *ret_pid) {
    char cmd[2048], listen[64], exec[600];
    unsigned port = 0;
    pid_t pid;

    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && '%s' '%s' >/dev/null", db_dir, BENCH_TANGD_KEYGEN,
             db_dir);
    bench_run(cmd);
    /* A free port from the kernel, then socat on it. */
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); "
             "print(s.getsockname()[1])' > '%s'",
             port_file);
    bench_run(cmd);
    FILE *pf = fopen(port_file, "r");
    if (!pf || fscanf(pf, "%u", &port) != 1)
        bench_die("choosing a port for tang");
    fclose(pf);
    snprintf(listen, sizeof listen, "TCP-LISTEN:%u,bind=127.0.0.1,fork,reuseaddr", port);
    snprintf(exec, sizeof exec, "EXEC:%s %s", BENCH_TANGD, db_dir);
    pid = fork();
    if (pid < 0)
        bench_die("fork");
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("socat", "socat", listen, exec, (char *)NULL);
        _exit(127);
    }
    bench_register_pid(pid);
    if (ret_pid)
        *ret_pid = pid;
    return port;
}

unsigned bench_start_service(const char *dir, const char *exe, const char *name, pid_t *ret_pid) {
    char cfg[512], port_file[512], log[512];
    snprintf(cfg, sizeof cfg, "%s/%s.json", dir, name);
    snprintf(port_file, sizeof port_file, "%s/%s.port", dir, name);
    snprintf(log, sizeof log, "%s/%s.log", dir, name);
    char *argv[] = {(char *)exe, "--config", cfg, "--port-file", port_file, NULL};
    return bench_start_daemon(argv, port_file, log, ret_pid);
}
