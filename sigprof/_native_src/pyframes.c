/* python_stack and thread_python_stack: the Python frames that made a guest call,
 * walked in C.
 *
 * Owns no state.  Uses PyFrame_GetLasti and PyFrame_GetBack (CPython 3.11+: the
 * version sigprof.h requires) and PyThreadState.native_thread_id (3.11+ too). */
#include "sigprof.h"

/* ((code, lasti, code, lasti, ...), reached_stop) from `frame` (a new reference, or
 * NULL; consumed) outwards, innermost first, up to the first frame running
 * `stop_code` (not included). */
static PyObject *walk(PyFrameObject *frame, PyObject *stop)
{
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_XDECREF(frame);
        return NULL;
    }
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

/* python_stack(frame, stop_code): `frame` is the calling thread's own (or None).
 * What the Python side reads at the exit of a sampled guest call: in C because it
 * runs once per such call, while the guest is profiled. */
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
    PyFrameObject *frame = start == Py_None ? NULL : (PyFrameObject *)start;
    Py_XINCREF(frame);
    return walk(frame, stop);
}

/* thread_python_stack(native_tid, stop_code): the same walk over another thread's
 * frames, from the frame it is running now; None when no Python thread has that id.
 *
 * Atomic under the GIL, which is why it is one C call: a frame object of another
 * thread held while Python code runs (sys._current_frames() and a walk after it) can
 * outlive the interpreter frame it points into once that thread runs on, and reading
 * it then crashes CPython 3.11 (sentry-python #2386).  Nothing here releases the GIL
 * except a garbage collection, whose finalizers run Python code, so the collector is
 * off for the walk. */
PyObject *sp_py_thread_python_stack(PyObject *self, PyObject *args)
{
    unsigned long tid;
    PyObject *stop;
    (void)self;
    if (!PyArg_ParseTuple(args, "kO", &tid, &stop))
        return NULL;
    int collecting = PyGC_Disable();
    PyObject *result = NULL;
    PyThreadState *tstate = PyInterpreterState_ThreadHead(PyInterpreterState_Get());
    while (tstate != NULL && tstate->native_thread_id != tid)
        tstate = PyThreadState_Next(tstate);
    if (tstate == NULL)
        result = Py_NewRef(Py_None);
    else
        result = walk(PyThreadState_GetFrame(tstate), stop);
    if (collecting)
        PyGC_Enable();
    return result;
}
