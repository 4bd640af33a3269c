static inline int mix(int a, int b) {
    return a * 31 + (b ^ (a >> 3));
}
int step(int x);
int main(void) {
    int acc = 1;
    for (int i = 0; i < 100000000; i++)
        acc = step(mix(acc, i));
    return acc & 1;
}
