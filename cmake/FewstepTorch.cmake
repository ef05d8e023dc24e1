# Defines the imported target fewstep::torch (LibTorch headers and libraries).
#
# Two ways to find LibTorch:
#  - FEWSTEP_TORCH_FROM_PYTHON=ON (default unless Torch_DIR is set): ask a Python interpreter
#    (FEWSTEP_PYTHON, else Python3_EXECUTABLE, else python3) where its torch package lives and
#    link its libraries directly. This avoids TorchConfig.cmake's CUDA toolkit detection, so a
#    CUDA wheel builds on a machine without (or with a different) CUDA toolkit; CUDA kernels
#    still load at run time because libtorch.so is linked with --no-as-needed.
#  - FEWSTEP_TORCH_FROM_PYTHON=OFF: find_package(Torch) through CMAKE_PREFIX_PATH/Torch_DIR,
#    e.g. a standalone (CPU or CUDA) LibTorch download.
if(TARGET fewstep::torch)
  return()
endif()

if(NOT DEFINED FEWSTEP_TORCH_FROM_PYTHON)
  if(DEFINED Torch_DIR)
    set(FEWSTEP_TORCH_FROM_PYTHON OFF)
  else()
    set(FEWSTEP_TORCH_FROM_PYTHON ON)
  endif()
endif()

add_library(fewstep::torch INTERFACE IMPORTED GLOBAL)

if(FEWSTEP_TORCH_FROM_PYTHON)
  if(FEWSTEP_PYTHON)
    set(_fewstep_py "${FEWSTEP_PYTHON}")
  elseif(Python3_EXECUTABLE)
    set(_fewstep_py "${Python3_EXECUTABLE}")
  else()
    find_program(_fewstep_py NAMES python3 python REQUIRED)
  endif()
  execute_process(
    COMMAND "${_fewstep_py}" -c
      "import os, torch; print(os.path.dirname(torch.__file__)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__)"
    OUTPUT_VARIABLE _fewstep_torch_info
    RESULT_VARIABLE _fewstep_torch_rc
    ERROR_VARIABLE _fewstep_torch_err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _fewstep_torch_rc EQUAL 0)
    message(FATAL_ERROR
      "fewstep: could not import torch with ${_fewstep_py}:\n${_fewstep_torch_err}\n"
      "Pass -DFEWSTEP_PYTHON=/path/to/a/python/with/torch (in a fewstep checkout 'make deps' creates .venv), "
      "or use a standalone LibTorch with -DFEWSTEP_TORCH_FROM_PYTHON=OFF -DCMAKE_PREFIX_PATH=/path/to/libtorch.")
  endif()
  string(REPLACE "\n" ";" _fewstep_torch_info "${_fewstep_torch_info}")
  list(GET _fewstep_torch_info 0 FEWSTEP_TORCH_DIR)
  list(GET _fewstep_torch_info 1 _fewstep_abi)
  list(GET _fewstep_torch_info 2 FEWSTEP_TORCH_VERSION)
  set(FEWSTEP_TORCH_LIBDIR "${FEWSTEP_TORCH_DIR}/lib")
  foreach(_lib torch torch_cpu c10)
    find_library(FEWSTEP_LIB_${_lib} NAMES ${_lib} PATHS "${FEWSTEP_TORCH_LIBDIR}" NO_DEFAULT_PATH REQUIRED)
  endforeach()
  target_include_directories(fewstep::torch SYSTEM INTERFACE
    "${FEWSTEP_TORCH_DIR}/include" "${FEWSTEP_TORCH_DIR}/include/torch/csrc/api/include")
  target_compile_definitions(fewstep::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_fewstep_abi})
  # --no-as-needed: every binary that links fewstep names libtorch, libtorch_cpu and libc10 itself,
  # so the loader finds them through that binary's RUNPATH (CMake adds LibTorch's directory, as for
  # any library linked by full path) and libfewstep.so needs no path of its own to LibTorch.
  # libtorch.so also brings the CUDA kernels of a CUDA build, which nothing references by symbol.
  target_link_libraries(fewstep::torch INTERFACE
    "-Wl,--no-as-needed" "${FEWSTEP_LIB_torch}" "${FEWSTEP_LIB_torch_cpu}" "${FEWSTEP_LIB_c10}"
    "-Wl,--as-needed")
  message(STATUS "fewstep: torch ${FEWSTEP_TORCH_VERSION} from ${FEWSTEP_TORCH_DIR} (via ${_fewstep_py})")
else()
  find_package(Torch REQUIRED)
  target_link_libraries(fewstep::torch INTERFACE ${TORCH_LIBRARIES})
  if(TORCH_CXX_FLAGS)
    separate_arguments(_fewstep_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
    target_compile_options(fewstep::torch INTERFACE ${_fewstep_torch_flags})
  endif()
  list(GET TORCH_LIBRARIES 0 _fewstep_first)
  set(FEWSTEP_TORCH_VERSION "${Torch_VERSION}")
  set(FEWSTEP_TORCH_LIBDIR "${TORCH_INSTALL_PREFIX}/lib")
  message(STATUS "fewstep: LibTorch ${Torch_VERSION} via find_package(Torch)")
endif()
