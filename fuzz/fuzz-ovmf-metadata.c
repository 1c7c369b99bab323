/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for snp_ovmf_parse() (untrusted: the firmware image an operator measures). The
 * input is the end of an image whose size is the input rounded up to a page (the parser sees
 * only the last bytes, as snp_measure() gives it). Checks the parser's invariants on every
 * accepted image: sections are known, page-aligned, inside 4 GiB below the firmware, do not
 * overlap, and SNP_SECRETS is present.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "snp/ovmf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SnpOvmfInfo info;
    char err[SNP_OVMF_ERR_MAX];

    if (size > SNP_OVMF_TAIL_MAX)
        return 0;
    /* As given (a whole image when size is a page multiple), and as the tail of a larger one. */
    uint64_t sizes[2] = {size, ((uint64_t)size + 4095) / 4096 * 4096 + 4096};
    for (int k = 0; k < 2; k++) {
        err[0] = '\0';
        int r = snp_ovmf_parse(data, size, sizes[k], &info, err);
        if (r < 0) {
            if (r != -EBADMSG || err[0] == '\0' || strlen(err) >= SNP_OVMF_ERR_MAX)
                abort();
            continue;
        }
        if (info.n_sections == 0 || info.n_sections > SNP_OVMF_MAX_SECTIONS ||
            info.gpa + info.image_size != 0x100000000ull ||
            !snp_ovmf_find_section(&info, SNP_OVMF_SECTION_SECRETS))
            abort();
        for (size_t i = 0; i < info.n_sections; i++) {
            const SnpOvmfSection *s = &info.sections[i];
            if (!snp_ovmf_section_name(s->type) || s->size == 0 || s->gpa % 4096 ||
                s->size % 4096 || (uint64_t)s->gpa + s->size > info.gpa)
                abort();
            for (size_t j = 0; j < i; j++) {
                const SnpOvmfSection *o = &info.sections[j];
                if (s->gpa < (uint64_t)o->gpa + o->size && o->gpa < (uint64_t)s->gpa + s->size)
                    abort();
            }
        }
    }
    return 0;
}
