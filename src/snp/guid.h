/* SPDX-License-Identifier: Apache-2.0 */
/* GUIDs of OVMF's footer table and of QEMU's SEV hashes table, in the little-endian (EFI_GUID)
 * byte order in which they appear in the image and in guest memory. */
#pragma once

/* 96b582de-1fb2-45f7-baea-a366c55a082d */
#define SNP_GUID_OVMF_TABLE_FOOTER                                                                 \
    "\xde\x82\xb5\x96\xb2\x1f\xf7\x45\xba\xea\xa3\x66\xc5\x5a\x08\x2d"
/* 7255371f-3a3b-4b04-927b-1da6efa8d454 */
#define SNP_GUID_SEV_HASH_TABLE_RV                                                                 \
    "\x1f\x37\x55\x72\x3b\x3a\x04\x4b\x92\x7b\x1d\xa6\xef\xa8\xd4\x54"
/* 00f771de-1a7e-4fcb-890e-68c77e2fb44e */
#define SNP_GUID_SEV_ES_RESET_BLOCK                                                                \
    "\xde\x71\xf7\x00\x7e\x1a\xcb\x4f\x89\x0e\x68\xc7\x7e\x2f\xb4\x4e"
/* dc886566-984a-4798-a75e-5585a7bf67cc */
#define SNP_GUID_OVMF_SEV_METADATA                                                                 \
    "\x66\x65\x88\xdc\x4a\x98\x98\x47\xa7\x5e\x55\x85\xa7\xbf\x67\xcc"
/* 9438d606-4f22-4cc9-b479-a793d411fd21 */
#define SNP_GUID_SEV_HASH_TABLE_HEADER                                                             \
    "\x06\xd6\x38\x94\x22\x4f\xc9\x4c\xb4\x79\xa7\x93\xd4\x11\xfd\x21"
/* 4de79437-abd2-427f-b835-d5b172d2045b */
#define SNP_GUID_SEV_KERNEL_ENTRY "\x37\x94\xe7\x4d\xd2\xab\x7f\x42\xb8\x35\xd5\xb1\x72\xd2\x04\x5b"
/* 44baf731-3a2f-4bd7-9af1-41e29169781d */
#define SNP_GUID_SEV_INITRD_ENTRY "\x31\xf7\xba\x44\x2f\x3a\xd7\x4b\x9a\xf1\x41\xe2\x91\x69\x78\x1d"
/* 97d02dd8-bd20-4c94-aa78-e7714d36ab2a */
#define SNP_GUID_SEV_CMDLINE_ENTRY                                                                 \
    "\xd8\x2d\xd0\x97\x20\xbd\x94\x4c\xaa\x78\xe7\x71\x4d\x36\xab\x2a"
