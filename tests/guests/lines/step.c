static inline int twist(int v) {
    return (v << 5) ^ (v >> 7);
}
int step(int x) {
    return twist(x) + 7;
}
