# Data-parallel runtime (dist/): communicators over MPI, shard layouts, run agreement, the
# sharded optimizer. Its sources are part of the engine (cmake/engine_library.cmake), since the
# trainer runs every step through them; this file only decides whether MPI is in the build.
# MPI (Open MPI from Debian, installed by `make setup`) is required unless LL_ENABLE_MPI is
# OFF: the GPU check machine has no Debian MPI, and a world of one needs none (a build without
# MPI refuses to run under mpirun, see dist/communicator.cpp).
include_guard(GLOBAL)  # included by engine_library.cmake, which needs LL_ENABLE_MPI first
option(LL_ENABLE_MPI "Build the MPI communicator (multi-process training)" ON)
if(LL_ENABLE_MPI)
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()
message(STATUS "MPI communicator: ${LL_ENABLE_MPI}")
