/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sev-guest evidence provider (/dev/sev-guest ioctls, linux/sev-guest.h). Every ioctl goes
 * through a transport function, so that tests can stand in for the kernel and firmware, check the
 * exact bytes sent and answer with canned responses and errors.
 */
#pragma once

#include <linux/ioctl.h>
#include <linux/sev-guest.h>

#include "snp/provider.h"

/* Performs one guest request: request is SNP_GET_REPORT, SNP_GET_EXT_REPORT or
 * SNP_GET_DERIVED_KEY. Returns 0, or a negative errno with io->exitinfo2 (fw_error, vmm_error)
 * filled in as the kernel does. */
typedef int (*SnpSevGuestTransport)(void *userdata, unsigned long request,
                                    struct snp_guest_request_ioctl *io);

/* Opens the device at path (O_RDWR). Returns 0, or the open() errno (-ENOENT, -EACCES...). */
int snp_provider_sevguest_open(const char *path, SnpProvider **ret);
/* A provider over a custom transport (tests). userdata is not owned. */
int snp_provider_sevguest_new(SnpSevGuestTransport transport, void *userdata, SnpProvider **ret);

/* Bounds used for SNP_GET_EXT_REPORT: the first certificate buffer, the largest accepted, and
 * how often a "busy" host is retried (with doubling sleeps starting at SNP_SEVGUEST_BUSY_SLEEP_US).
 */
#define SNP_SEVGUEST_CERTS_INITIAL (4096u * 4u)
#define SNP_SEVGUEST_CERTS_MAX (4096u * 64u)
#define SNP_SEVGUEST_BUSY_RETRIES 5
#define SNP_SEVGUEST_BUSY_SLEEP_US 2000u
