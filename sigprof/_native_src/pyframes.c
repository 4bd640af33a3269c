/* python_stack: the Python frames that made a guest call, walked in C.
 *
 * Owns no state.  Uses PyFrame_GetLasti and PyFrame_GetBack (CPython 3.11+: the
 * version sigprof.h requires). */
#include "sigprof.h"

/* python_stack(frame, stop_code) -> ((code, lasti, code, lasti, ...), reached_stop): the
 * Python frames from `frame` outwards, innermost first, up to the first frame running
 * `stop_code` (not included).  What the Python side reads at the exit of a sampled
 * guest call: in C because it runs once per such call, while the guest is profiled. */
PyObject *sp_py_python_stack(PyObject *self, PyObject *args)
{
    PyObject *start, *stop;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &start, &stop))
        return NULL;
    if (start != Py_None && !PyFrame_Check(start)) {
        PyErr_SetString(PyExc_TypeError, "python_stack needs a frame or None");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    PyFrameObject *frame = start == Py_None ? NULL : (PyFrameObject *)start;
    Py_XINCREF(frame);
    int reached = 0;
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        if ((PyObject *)code == stop) {
            Py_DECREF(code);
            reached = 1;
            break;
        }
        PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(frame));
        int failed = lasti == NULL || PyList_Append(out, (PyObject *)code) < 0
                     || PyList_Append(out, lasti) < 0;
        Py_DECREF(code);
        Py_XDECREF(lasti);
        if (failed) {
            Py_DECREF(frame);
            Py_DECREF(out);
            return NULL;
        }
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    PyObject *flat = PyList_AsTuple(out);
    Py_DECREF(out);
    if (flat == NULL)
        return NULL;
    return Py_BuildValue("(Ni)", flat, reached);
}
