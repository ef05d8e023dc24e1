// Shared by the binding files: Python keyword options → fewstep::Options.
#pragma once

#include <torch/python.h>

#include "fewstep/core/options.h"

/// bool → bool, int → int64, float → double, str → string; anything else is a TypeError naming the key.
fewstep::Options options_from_dict(const pybind11::dict& dict);
