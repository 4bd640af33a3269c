/* A WASI command for the fault tests: burn CPU in a few functions, print a
 * checksum, and exit through proc_exit with the code given as argv[1]. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) static unsigned mix(unsigned x, int n) {
    for (int i = 0; i < n; i++) x = x * 1664525u + 1013904223u;
    return x;
}

__attribute__((noinline)) static unsigned rounds(int r) {
    unsigned acc = 1;
    for (int i = 0; i < r; i++) acc ^= mix(acc + i, 200000);
    return acc;
}

int main(int argc, char **argv) {
    int code = argc > 1 ? atoi(argv[1]) : 0;
    unsigned sum = rounds(argc > 2 ? atoi(argv[2]) : 300);
    printf("checksum=%u\n", sum);
    fflush(stdout);
    exit(code);   /* proc_exit */
}
