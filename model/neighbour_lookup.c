/* model._neighbour_lookup: the session memory's neighbour lookup in one call.
 *
 * For every (user, window slot, candidate): the candidate's weight in the neighbour row of the item in
 * that slot, or 0 when it is not there (model.session_memory.SessionMemory._neighbour_weights, whose
 * two numpy ways give the same values). A lookup, no arithmetic but one product by 1 or 0, so the
 * values are the numpy ways' to the bit. Built by stream.native_build beside the compiled modules.
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

/* out[i, j] = weight of cands[i / slots, j] in the row rows[i] of the table (k entries per row, sorted
 * by item index), or 0. A row beyond the table has no neighbours (as in numpy's flattened search). The
 * search is numpy's searchsorted "left": the first entry not below the candidate, the last entry when
 * every entry is below it. */
static void lookup(float *out, const int64_t *rows, const int64_t *cands, const int32_t *table,
                   const float *weights, Py_ssize_t n_rows, Py_ssize_t k, Py_ssize_t users, Py_ssize_t slots,
                   Py_ssize_t n_cands) {
    for (Py_ssize_t u = 0; u < users; u++) {
        const int64_t *cand = cands + u * n_cands;
        for (Py_ssize_t s = 0; s < slots; s++) {
            const int64_t row = rows[u * slots + s];
            float *o = out + (u * slots + s) * n_cands;
            if (row < 0 || row >= n_rows) {
                for (Py_ssize_t j = 0; j < n_cands; j++) o[j] = 0.0f;
                continue;
            }
            const int32_t *keys = table + row * k;
            const float *w = weights + row * k;
            for (Py_ssize_t j = 0; j < n_cands; j++) {
                /* Branch-free: with candidates in random order the branches of a search were its cost. */
                const int64_t q = cand[j];
                const int32_t *base = keys;
                for (Py_ssize_t n = k; n > 1;) {
                    const Py_ssize_t half = n / 2;
                    base = ((int64_t)base[half] < q) ? base + half : base;
                    n -= half;
                }
                Py_ssize_t pos = (base - keys) + ((int64_t)*base < q);
                if (pos == k) pos = k - 1;
                o[j] = w[pos] * ((int64_t)keys[pos] == q ? 1.0f : 0.0f);
            }
        }
    }
}

/* weights(out, rows, cands, table, table_weights, k): out float32 (B, W, C), rows int64 (B, W), cands
 * int64 (B, C), table int32 (R, k), table_weights float32 (R, k); every array C-contiguous. */
static PyObject *weights(PyObject *self, PyObject *args) {
    Py_buffer out, rows, cands, table, tw;
    Py_ssize_t k, users, slots, n_cands;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*nnnn", &out, &rows, &cands, &table, &tw, &k, &users, &slots,
                          &n_cands))
        return NULL;
    if (k < 1 || users < 0 || slots < 0 || n_cands < 0) {
        PyErr_SetString(PyExc_ValueError, "neighbour_lookup: bad shape");
        goto done;
    }
    const Py_ssize_t n_rows = table.len / (4 * k);
    if (!need(&table, n_rows * k * 4, "table") || !need(&tw, n_rows * k * 4, "table_weights") ||
        !need(&rows, users * slots * 8, "rows") || !need(&cands, users * n_cands * 8, "cands") ||
        !need(&out, users * slots * n_cands * 4, "out"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    lookup((float *)out.buf, (const int64_t *)rows.buf, (const int64_t *)cands.buf, (const int32_t *)table.buf,
           (const float *)tw.buf, n_rows, k, users, slots, n_cands);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&cands);
    PyBuffer_Release(&table);
    PyBuffer_Release(&tw);
    return result;
}

static PyMethodDef methods[] = {
    {"weights", weights, METH_VARARGS, "Each candidate's weight in each window item's neighbour row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "model._neighbour_lookup", NULL, -1, methods};

PyMODINIT_FUNC PyInit__neighbour_lookup(void) { return PyModule_Create(&module); }
