/* Classifies the 360 test digits with a model compiled by lopper.
 *
 *   lopper compile examples/digits_mlp.lop -o build/libdigits_mlp.so
 *   cc -O2 -Ibuild examples/c/digits.c -Lbuild -ldigits_mlp -Wl,-rpath,build -o build/digits
 *   build/digits ../shared/data/digits/digits.safetensors
 *
 * It reads `test_x` (f32[360,64]) and `test_y` (i64[360]) straight from the
 * safetensors file (an 8-byte header length, a JSON header, then the data)
 * and prints the accuracy. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits_mlp.h"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

/* Copies tensor `name` out of a safetensors file; returns its byte count or 0. */
static size_t tensor(const char *file, size_t len, const char *name, void **out) {
    if (len < 8) return 0;
    uint64_t header_len;
    memcpy(&header_len, file, 8);
    if (header_len > len - 8) return 0;
    char *header = malloc(header_len + 1);
    memcpy(header, file + 8, header_len);
    header[header_len] = 0;
    char key[128];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *at = strstr(header, key);
    char *offsets = at ? strstr(at, "\"data_offsets\"") : NULL;
    unsigned long long begin, end;
    size_t bytes = 0;
    if (offsets && sscanf(offsets, "\"data_offsets\":[%llu,%llu]", &begin, &end) == 2 && begin <= end &&
        end <= len - 8 - header_len) {
        bytes = (size_t)(end - begin);
        *out = malloc(bytes ? bytes : 1);
        memcpy(*out, file + 8 + header_len + begin, bytes);
    }
    free(header);
    return bytes;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/data/digits/digits.safetensors";
    size_t len;
    char *file = read_file(path, &len);
    if (!file) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    float *x = NULL;
    int64_t *y = NULL;
    size_t x_bytes = tensor(file, len, "test_x", (void **)&x);
    size_t y_bytes = tensor(file, len, "test_y", (void **)&y);
    int64_t n = (int64_t)(y_bytes / sizeof(int64_t));
    if (n == 0 || (int64_t)(x_bytes / sizeof(float)) != digits_mlp_x_elements(n)) {
        fprintf(stderr, "%s lacks test_x f32[N,64] and test_y i64[N]\n", path);
        return 1;
    }
    float *p = malloc((size_t)digits_mlp_probabilities_elements(n) * sizeof(float));
    int rc = digits_mlp_run(x, p, n);
    if (rc != DIGITS_MLP_OK) {
        fprintf(stderr, "digits_mlp_run failed with %d\n", rc);
        return 1;
    }
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < 10; c++)
            if (p[i * 10 + c] > p[i * 10 + best]) best = c;
        correct += best == y[i];
    }
    printf("accuracy: %.4f (%lld/%lld)\n", (double)correct / (double)n, (long long)correct, (long long)n);
    /* Bad arguments are refused without touching memory. */
    if (digits_mlp_run(x, p, 0) != DIGITS_MLP_ERR_BAD_SIZE || digits_mlp_run(NULL, p, n) != DIGITS_MLP_ERR_NULL_BUFFER ||
        digits_mlp_run(x, p, INT64_MAX / 2) != DIGITS_MLP_ERR_BAD_SIZE) {
        fprintf(stderr, "error codes are wrong\n");
        return 1;
    }
    free(p);
    free(x);
    free(y);
    free(file);
    return 0;
}
