/* A small WASI command for the CLI tests: count words in a file.
 *
 *   wordfreq FILE        FILE is opened through a preopened directory
 *   env ROUNDS=N         repeat the count N times (default 1), to make CPU work
 *
 * Prints "words=<n> distinct=<d> top=<word> rounds=<r>" and exits with the
 * number of distinct words modulo 7 when EXIT_DISTINCT is set, so tests can
 * check argv, the preopen, the environment and the exit code all reached it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TABLE 4096

struct entry { char word[32]; int count; };
static struct entry table[TABLE];

__attribute__((noinline)) static unsigned hash_word(const char *w) {
    unsigned h = 2166136261u;
    for (; *w; w++) h = (h ^ (unsigned char)*w) * 16777619u;
    return h;
}

__attribute__((noinline)) static void count_word(const char *w) {
    unsigned i = hash_word(w) % TABLE;
    while (table[i].count && strcmp(table[i].word, w) != 0) i = (i + 1) % TABLE;
    if (!table[i].count) strncpy(table[i].word, w, sizeof table[i].word - 1);
    table[i].count++;
}

__attribute__((noinline)) static int tokenize(const char *text, long len) {
    char w[32];
    int n = 0, words = 0;
    for (long k = 0; k <= len; k++) {
        int c = k < len ? (unsigned char)text[k] : ' ';
        if (isalnum(c)) {
            if (n < 31) w[n++] = (char)tolower(c);
        } else if (n) {
            w[n] = 0;
            count_word(w);
            words++;
            n = 0;
        }
    }
    return words;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: wordfreq FILE\n"); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 3; }
    static char text[1 << 20];
    long len = (long)fread(text, 1, sizeof text, f);
    fclose(f);
    const char *r = getenv("ROUNDS");
    int rounds = r ? atoi(r) : 1, words = 0;
    for (int i = 0; i < rounds; i++) {
        memset(table, 0, sizeof table);
        words = tokenize(text, len);
    }
    int distinct = 0, best = 0;
    for (int i = 0; i < TABLE; i++) {
        if (table[i].count) distinct++;
        if (table[i].count > table[best].count) best = i;
    }
    printf("words=%d distinct=%d top=%s rounds=%d\n", words, distinct, table[best].word, rounds);
    return getenv("EXIT_DISTINCT") ? distinct % 7 : 0;
}
