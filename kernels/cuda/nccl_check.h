#pragma once
// Every NCCL call goes through LL_NCCL_CHECK: a failure becomes an ll::Error naming the call
// site (file:line), the call, NCCL's text for the result code and, where the library has one,
// its description of the last error (which says what was wrong: a peer's address, a bad
// argument's name). ncclInProgress is not an error: nonblocking communicators return it while
// the call completes in the background (callers poll ncclCommGetAsyncError, see
// engine/parallel/cuda/nccl_communicator.cpp), so it passes this check.
#include <nccl.h>

#include <string>

#include "common/error.h"

namespace ll::nccl {

// "invalid argument (ncclInvalidArgument=4); last NCCL error: ..." for messages.
inline std::string describe_result(ncclResult_t result, ncclComm_t comm = nullptr) {
  std::string text = fmt::format("{} (ncclResult {})", ncclGetErrorString(result), int(result));
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') text += fmt::format("; last NCCL error: {}", last);
  return text;
}

}  // namespace ll::nccl

#define LL_NCCL_CHECK(call)                                                  \
  do {                                                                       \
    ncclResult_t ll_nccl_status_ = (call);                                   \
    if (ll_nccl_status_ != ncclSuccess && ll_nccl_status_ != ncclInProgress) \
      ::ll::fail("{}:{}: {} failed: {}", __FILE__, __LINE__, #call,          \
                 ::ll::nccl::describe_result(ll_nccl_status_));              \
  } while (0)
