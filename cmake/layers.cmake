# One static library per layer, each linking only the layers below it (DESIGN.md section 2):
#
#   ll_common <- ll_data, ll_optim <- ll_kernels <- ll_cuda <- ll_backends <- ll_model
#             <- ll_parallel, ll_eval <- ll_train          (ll_engine: all of them, for tools)
#
# tests/test_layering.cpp fails when a source includes a header of a layer above its own.
# Every library also has an _asan twin (AddressSanitizer + UBSan, CPU only) for the
# hostile-input tests. A new .cpp in a layer's folder is picked up without editing this file.

option(LL_ENABLE_MPI "Build the MPI communicator (multi-process training)" ON)
if(LL_ENABLE_MPI)
  # The GPU check machine has no Debian MPI, and a world of one needs none (a build without MPI
  # refuses to run under mpirun, see engine/parallel/communicator.cpp).
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()
message(STATUS "MPI communicator: ${LL_ENABLE_MPI}")

set(LL_SANITIZE_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)

# ll_layer(NAME SOURCES <files> DEPS <our libraries below> LIBS <third-party libraries>)
# Makes NAME and NAME_asan; NAME_asan links the _asan twins of DEPS.
function(ll_layer name)
  cmake_parse_arguments(arg "" "" "SOURCES;DEPS;LIBS" ${ARGN})
  foreach(variant "" "_asan")
    set(target ${name}${variant})
    add_library(${target} STATIC ${arg_SOURCES})
    target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LL_WARNINGS}>)
    target_link_libraries(${target} PUBLIC ${arg_LIBS})
    foreach(dep ${arg_DEPS})
      target_link_libraries(${target} PUBLIC ${dep}${variant})
    endforeach()
    if(variant STREQUAL "_asan")
      target_compile_options(${target} PUBLIC ${LL_SANITIZE_FLAGS})
      target_link_options(${target} PUBLIC -fsanitize=address,undefined)
    endif()
  endforeach()
endfunction()

function(ll_glob out)
  set(files)
  foreach(dir ${ARGN})
    file(GLOB found CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${dir}/*.cpp)
    list(APPEND files ${found})
  endforeach()
  set(${out} ${files} PARENT_SCOPE)
endfunction()

ll_glob(ll_common_sources common)
ll_layer(ll_common SOURCES ${ll_common_sources}
  LIBS fmt::fmt nlohmann_json::nlohmann_json OpenMP::OpenMP_CXX)

ll_glob(ll_data_sources data)
ll_layer(ll_data SOURCES ${ll_data_sources} DEPS ll_common
  LIBS PkgConfig::SENTENCEPIECE PkgConfig::PCRE2 PkgConfig::ICU)

ll_glob(ll_optim_sources optim)
ll_layer(ll_optim SOURCES ${ll_optim_sources} DEPS ll_common)

# The Backend interface, its shape checks and the fp32 CPU backend.
ll_glob(ll_kernels_sources kernels kernels/cpu)
list(FILTER ll_kernels_sources EXCLUDE REGEX "/kernels/make_backend\\.cpp$")
ll_layer(ll_kernels SOURCES ${ll_kernels_sources} DEPS ll_optim ll_common
  LIBS PkgConfig::OPENBLAS)
# RoPE frequencies round every fp32 step as torch does; a contracted multiply-add (the default
# on aarch64) would round once where torch rounds twice.
set_source_files_properties(${PROJECT_SOURCE_DIR}/kernels/rope_scaling.cpp PROPERTIES
  COMPILE_OPTIONS -ffp-contract=off)

# The CUDA backend (kernels/cuda), when it is built: cmake/cuda_library.cmake.
include(${CMAKE_CURRENT_LIST_DIR}/cuda_library.cmake)

# The backend factory (--device auto|cpu|cuda): the one place that knows both backends. Its
# sanitized twin is CPU-only.
ll_layer(ll_backends SOURCES ${PROJECT_SOURCE_DIR}/kernels/make_backend.cpp DEPS ll_kernels)
if(LL_HAVE_CUDA)
  target_link_libraries(ll_backends PUBLIC ll_cuda)
endif()

ll_glob(ll_model_sources model model/formats)
ll_layer(ll_model SOURCES ${ll_model_sources} DEPS ll_backends ll_kernels ll_common)

ll_glob(ll_parallel_sources engine/parallel)
if(NOT LL_ENABLE_MPI)
  list(FILTER ll_parallel_sources EXCLUDE REGEX "/mpi_communicator\\.cpp$")
endif()
ll_layer(ll_parallel SOURCES ${ll_parallel_sources} DEPS ll_model ll_data ll_optim)
if(LL_ENABLE_MPI)
  foreach(t ll_parallel ll_parallel_asan)
    target_link_libraries(${t} PUBLIC MPI::MPI_CXX)
    target_compile_definitions(${t} PUBLIC LL_HAVE_MPI=1)
  endforeach()
endif()
include(${CMAKE_CURRENT_LIST_DIR}/nccl.cmake)  # engine/parallel/cuda joins ll_parallel

ll_glob(ll_eval_sources engine/eval)
ll_layer(ll_eval SOURCES ${ll_eval_sources} DEPS ll_model ll_data)

ll_glob(ll_train_sources engine/train)
ll_layer(ll_train SOURCES ${ll_train_sources} DEPS ll_parallel ll_eval ll_model ll_data ll_optim
  LIBS yaml-cpp CLI11::CLI11)

# Everything, for the tools and the tests.
add_library(ll_engine INTERFACE)
target_link_libraries(ll_engine INTERFACE ll_train)
add_library(ll_engine_asan INTERFACE)
target_link_libraries(ll_engine_asan INTERFACE ll_train_asan)
