/*
 * Shared by the libFuzzer harnesses in this directory (built by build.sh, one
 * binary per .c file): a check that aborts with its text, and each harness's
 * default -max_len, added to the command line unless one is given there.
 */
#ifndef KZGATE_FUZZ_COMMON_H
#define KZGATE_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* Puts "-max_len=<len>" right after argv[0] when no -max_len is given: libFuzzer reads
 * the flags after LLVMFuzzerInitialize, and a later flag still overrides it. */
static void default_max_len(int *argc, char ***argv, const char *flag)
{
    for (int i = 1; i < *argc; i++)
        if (strncmp((*argv)[i], "-max_len=", 9) == 0)
            return;
    char **args = calloc((size_t)*argc + 2, sizeof *args);
    if (args == NULL)
        return;
    args[0] = (*argv)[0];
    args[1] = (char *)flag;
    for (int i = 1; i < *argc; i++)
        args[i + 1] = (*argv)[i];
    *argv = args; /* kept for the process's life, as libFuzzer keeps argv */
    (*argc)++;
}

#endif
