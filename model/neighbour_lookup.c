/* model._neighbour_lookup: the session memory's candidate terms (model.session_memory) in one call each.
 *
 * mass: for every (user, candidate), the sum over the window's slots, in slot order, of the candidate's
 * weight in the neighbour row of the slot's item (0 when it is not there) times the slot's normalised
 * decay weight; repeat: the sum (or the maximum) over the slots of the slot's decay weight where the
 * slot holds the candidate. The same float32 products and sums, in the same order, as the numpy of
 * SessionMemory.candidates (each product rounded on its own: built with -ffp-contract=off), so the same
 * bits. Built by stream.native_build beside the compiled modules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static int need(Py_buffer *b, Py_ssize_t bytes, const char *name) {
    if (b->len != bytes) {
        PyErr_Format(PyExc_ValueError, "neighbour_lookup: %s has %zd bytes, expected %zd", name, b->len, bytes);
        return 0;
    }
    return 1;
}

/* The weight of candidate q in a row of k entries sorted by item index, or 0: numpy's searchsorted
 * "left" (the first entry not below q, the last entry when every entry is below it), then a match. */
static inline float row_weight(const int32_t *keys, const float *w, Py_ssize_t k, int64_t q) {
    /* Branch-free: with candidates in random order the branches of a search were its cost. */
    const int32_t *base = keys;
    for (Py_ssize_t n = k; n > 1;) {
        const Py_ssize_t half = n / 2;
        base = ((int64_t)base[half] < q) ? base + half : base;
        n -= half;
    }
    Py_ssize_t pos = (base - keys) + ((int64_t)*base < q);
    if (pos == k) pos = k - 1;
    return w[pos] * ((int64_t)keys[pos] == q ? 1.0f : 0.0f);
}

/* out (B, C) = sum over slots s in order of row_weight(rows[b, s], cands[b, c]) * norm[b, s], from 0. A row
 * beyond the table has no neighbours (as in numpy's flattened search). */
static void neighbour_mass(float *out, const int64_t *rows, const int64_t *cands, const int32_t *table,
                           const float *weights, const float *norm, Py_ssize_t n_rows, Py_ssize_t k,
                           Py_ssize_t users, Py_ssize_t slots, Py_ssize_t n_cands) {
    for (Py_ssize_t u = 0; u < users; u++) {
        const int64_t *cand = cands + u * n_cands;
        float *o = out + u * n_cands;
        for (Py_ssize_t j = 0; j < n_cands; j++) o[j] = 0.0f;
        for (Py_ssize_t s = 0; s < slots; s++) {
            const int64_t row = rows[u * slots + s];
            const float n = norm[u * slots + s];
            if (row < 0 || row >= n_rows) {
                for (Py_ssize_t j = 0; j < n_cands; j++) o[j] += 0.0f * n;
                continue;
            }
            const int32_t *keys = table + row * k;
            const float *w = weights + row * k;
            for (Py_ssize_t j = 0; j < n_cands; j++) {
                const float term = row_weight(keys, w, k, cand[j]) * n; /* rounded, then added */
                o[j] += term;
            }
        }
    }
}

/* out (B, C) = over slots s in order, of powers[b, s] where idx[b, s] == cands[b, c] (else 0 * powers):
 * the sum from 0, or (use_max) the maximum, the first slot's term first. */
static void repeat_terms(float *out, const int64_t *idx, const int64_t *cands, const float *powers,
                         Py_ssize_t users, Py_ssize_t slots, Py_ssize_t n_cands, int use_max) {
    for (Py_ssize_t u = 0; u < users; u++) {
        const int64_t *cand = cands + u * n_cands;
        const int64_t *slot = idx + u * slots;
        const float *p = powers + u * slots;
        float *o = out + u * n_cands;
        for (Py_ssize_t j = 0; j < n_cands; j++) {
            float total = use_max ? (slot[0] == cand[j] ? 1.0f : 0.0f) * p[0] : 0.0f;
            for (Py_ssize_t s = use_max ? 1 : 0; s < slots; s++) {
                const float term = (slot[s] == cand[j] ? 1.0f : 0.0f) * p[s];
                if (use_max)
                    total = term > total ? term : total;
                else
                    total += term;
            }
            o[j] = total;
        }
    }
}

/* mass(out, rows, cands, table, table_weights, norm, k, B, W, C): out float32 (B, C), rows int64 (B, W),
 * cands int64 (B, C), table int32 (R, k), table_weights float32 (R, k), norm float32 (B, W); every array
 * C-contiguous. */
static PyObject *mass(PyObject *self, PyObject *args) {
    Py_buffer out, rows, cands, table, tw, norm;
    Py_ssize_t k, users, slots, n_cands;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*y*nnnn", &out, &rows, &cands, &table, &tw, &norm, &k, &users, &slots,
                          &n_cands))
        return NULL;
    if (k < 1 || users < 0 || slots < 0 || n_cands < 0) {
        PyErr_SetString(PyExc_ValueError, "neighbour_lookup: bad shape");
        goto done;
    }
    const Py_ssize_t n_rows = table.len / (4 * k);
    if (!need(&table, n_rows * k * 4, "table") || !need(&tw, n_rows * k * 4, "table_weights") ||
        !need(&rows, users * slots * 8, "rows") || !need(&cands, users * n_cands * 8, "cands") ||
        !need(&norm, users * slots * 4, "norm") || !need(&out, users * n_cands * 4, "out"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    neighbour_mass((float *)out.buf, (const int64_t *)rows.buf, (const int64_t *)cands.buf,
                   (const int32_t *)table.buf, (const float *)tw.buf, (const float *)norm.buf, n_rows, k, users,
                   slots, n_cands);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&cands);
    PyBuffer_Release(&table);
    PyBuffer_Release(&tw);
    PyBuffer_Release(&norm);
    return result;
}

/* repeat(out, idx, cands, powers, B, W, C, use_max): out float32 (B, C), idx int64 (B, W), cands int64
 * (B, C), powers float32 (B, W); every array C-contiguous; W >= 1 with use_max. */
static PyObject *repeat(PyObject *self, PyObject *args) {
    Py_buffer out, idx, cands, powers;
    Py_ssize_t users, slots, n_cands;
    int use_max;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*y*y*y*nnnp", &out, &idx, &cands, &powers, &users, &slots, &n_cands, &use_max))
        return NULL;
    if (users < 0 || slots < (use_max ? 1 : 0) || n_cands < 0) {
        PyErr_SetString(PyExc_ValueError, "neighbour_lookup: bad shape");
        goto done;
    }
    if (!need(&idx, users * slots * 8, "idx") || !need(&cands, users * n_cands * 8, "cands") ||
        !need(&powers, users * slots * 4, "powers") || !need(&out, users * n_cands * 4, "out"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    repeat_terms((float *)out.buf, (const int64_t *)idx.buf, (const int64_t *)cands.buf,
                 (const float *)powers.buf, users, slots, n_cands, use_max);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&idx);
    PyBuffer_Release(&cands);
    PyBuffer_Release(&powers);
    return result;
}

static PyMethodDef methods[] = {
    {"mass", mass, METH_VARARGS, "The neighbour mass of each candidate over the window (see the module doc)."},
    {"repeat", repeat, METH_VARARGS, "The repeat term of each candidate over the window (see the module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "model._neighbour_lookup", NULL, -1, methods};

PyMODINIT_FUNC PyInit__neighbour_lookup(void) { return PyModule_Create(&module); }
