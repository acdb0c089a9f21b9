// RadPilot's native C-STORE receiver: dcmtk's upper layer and DIMSE, one thread per association.
//
// Python owns the listening socket (bind address, port 0, close on stop) and the archive; this module
// accepts connections on it, negotiates Storage and Verification presentation contexts, receives each
// C-STORE dataset as the bytes that arrived (never parsed here) and hands them to Python, which stores
// them and returns the DIMSE status to send back. The GIL is held only inside those calls, so the
// network work of several associations runs in parallel with the archive's.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "dcmtk/oflog/oflog.h"

namespace py = pybind11;

namespace {

using Clock = std::chrono::steady_clock;

// Collects one dataset's PDV fragments in a buffer the association keeps, refusing to grow beyond a limit: after
// its first instance the buffer has the room, so each fragment is copied once, not again at every growth.
class BytesConsumer : public DcmConsumer {
 public:
  BytesConsumer(std::string& data, size_t limit) : limit_(limit), data_(data) { data_.clear(); }
  OFBool good() const override { return within_limit_; }
  OFCondition status() const override { return within_limit_ ? EC_Normal : EC_StreamNotifyClient; }
  OFBool isFlushed() const override { return OFTrue; }
  offile_off_t avail() const override { return within_limit_ ? static_cast<offile_off_t>(limit_ - data_.size()) : 0; }
  offile_off_t write(const void* buf, offile_off_t buflen) override {
    if (!within_limit_) return 0;
    if (data_.size() + static_cast<size_t>(buflen) > limit_) {
      within_limit_ = false;
      return 0;
    }
    data_.append(static_cast<const char*>(buf), static_cast<size_t>(buflen));
    return buflen;
  }
  void flush() override {}
  std::string& data() { return data_; }
  bool exceeded() const { return !within_limit_; }

 private:
  size_t limit_;
  bool within_limit_ = true;
  std::string& data_;
};

// A buffer kept past this size is given back after the instance, so one large object does not pin memory while
// its association idles.
constexpr size_t KEPT_BUFFER_LIMIT = 32u << 20;

class BytesOutputStream : public DcmOutputStream {
 public:
  explicit BytesOutputStream(BytesConsumer* consumer) : DcmOutputStream(consumer) {}
};

struct Options {
  std::string ae_title;
  std::vector<std::string> sop_classes;        // Storage SOP classes accepted (plus Verification)
  std::vector<std::string> transfer_syntaxes;  // accepted; the requestor's order decides among them
  int max_pdu = ASC_MAXIMUMPDUSIZE;            // announced maximum PDU length (dcmtk caps it at 128 KiB)
  int acse_timeout = 30;                       // seconds for the A-ASSOCIATE-RQ to arrive whole
  int network_timeout = 60;                    // seconds an association may stay silent
  size_t max_dataset = size_t(2) << 30;        // bytes one dataset may add up to
  double idle_grace = 0.5;                     // seconds an idle association may stay open once stopping
};

std::string trimmed(const char* text) {
  std::string s(text ? text : "");
  size_t end = s.find_last_not_of(' ');
  size_t start = s.find_first_not_of(' ');
  return start == std::string::npos ? std::string() : s.substr(start, end - start + 1);
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

// dcmtk's reads time out only when no byte at all arrives, so a peer that trickles one byte at a time
// would hold an association for ever. Each receive is armed with a deadline instead: a watchdog shuts
// the socket down when a command or a dataset fragment has not arrived whole by then.
struct Watch {
  int fd;
  std::atomic<int64_t> deadline_ms{0};  // 0: not receiving
  int64_t allowance_ms;
  void arm(int64_t extra_ms = 0) { deadline_ms = now_ms() + allowance_ms + extra_ms; }
  static void progress(void* self, unsigned long) { static_cast<Watch*>(self)->arm(); }
};

class StoreReceiver {
 public:
  StoreReceiver(int listen_fd, Options options, py::object handler)
      : listen_fd_(listen_fd), options_(std::move(options)), handler_(std::move(handler)) {
    sop_classes_.insert(options_.sop_classes.begin(), options_.sop_classes.end());
    sop_classes_.insert(UID_VerificationSOPClass);
    transfer_syntaxes_.insert(options_.transfer_syntaxes.begin(), options_.transfer_syntaxes.end());
  }

  ~StoreReceiver() {
    {
      py::gil_scoped_release release;
      stop(0.0);
    }
  }

  void start() {
    if (running_.exchange(true)) return;
    // dcmtk would create its own listening socket unless it is handed one: the accepted
    // connections are handed over one at a time through dcmExternalSocketHandle, on the
    // accept thread only (the handle is a process-wide global).
    dcmExternalSocketHandle.set(listen_fd_);
    OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, 0, options_.acse_timeout, &network_);
    dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    if (cond.bad()) {
      running_ = false;
      OFString text;
      throw std::runtime_error(std::string("dcmtk network initialisation failed: ") + DimseCondition::dump(text, cond).c_str());
    }
    accept_thread_ = std::thread([this] { accept_loop(); });
    watchdog_thread_ = std::thread([this] { watchdog_loop(); });
  }

  // Stops accepting; lets requests in progress finish (an association idle for idle_grace is
  // released by abort), and aborts whatever still runs after drain_s seconds. Nothing
  // acknowledged is lost: a C-STORE is acknowledged only after Python stored it.
  void stop(double drain_s) {
    if (!running_.exchange(false)) return;
    if (accept_thread_.joinable()) accept_thread_.join();
    drain_deadline_ = Clock::now() + std::chrono::milliseconds(static_cast<long>(drain_s * 1000));
    stopping_ = true;
    std::unique_lock<std::mutex> lock(threads_mutex_);
    threads_done_.wait_until(lock, drain_deadline_ + std::chrono::seconds(2), [this] { return active_ == 0; });
    lock.unlock();
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    workers_.clear();
    watchdog_running_ = false;
    if (watchdog_thread_.joinable()) watchdog_thread_.join();
    if (network_ != nullptr) {
      // The listening socket belongs to Python: keep dcmtk from closing it.
      reinterpret_cast<PRIVATE_NETWORKKEY*>(network_->network)->networkSpecific.TCP.listenSocket = -1;
      ASC_dropNetwork(&network_);
      network_ = nullptr;
    }
  }

  int active() const { return active_.load(); }

 private:
  void accept_loop() {
    while (running_) {
      struct pollfd pfd = {listen_fd_, POLLIN, 0};
      int ready = ::poll(&pfd, 1, 50);
      if (ready <= 0 || !running_) continue;
      struct sockaddr_storage peer;
      socklen_t peer_len = sizeof(peer);
      int fd = ::accept4(listen_fd_, reinterpret_cast<struct sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      {
        std::lock_guard<std::mutex> lock(threads_mutex_);
        ++active_;
        reap_finished();
        workers_.emplace_back([this, fd] { serve_connection(fd); });
      }
    }
  }

  void watchdog_loop() {
    while (watchdog_running_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      int64_t now = now_ms();
      // At the end of a stop's drain, transfers still under way are cut too, as the main port aborts them.
      bool drained = stopping_ && Clock::now() >= drain_deadline_;
      std::lock_guard<std::mutex> lock(watch_mutex_);
      for (Watch* watch : watches_) {
        int64_t deadline = watch->deadline_ms.load();
        if (deadline != 0 && (now > deadline || drained)) {
          ::shutdown(watch->fd, SHUT_RDWR);  // the blocked dcmtk read fails and the association ends
          watch->deadline_ms = 0;
        }
      }
    }
  }

  void watch(Watch* w) {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    watches_.insert(w);
  }

  // Ends a receive; once it returns the watchdog no longer touches the socket (which may then be closed).
  void disarm(Watch* w) {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    w->deadline_ms = 0;
  }

  void unwatch(Watch* w) {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    watches_.erase(w);
  }

  void reap_finished() {
    // Joins the threads of associations that have ended (threads_mutex_ held).
    for (auto it = finished_.begin(); it != finished_.end(); ++it) {
      for (auto w = workers_.begin(); w != workers_.end(); ++w) {
        if (w->get_id() == *it) {
          w->join();
          workers_.erase(w);
          break;
        }
      }
    }
    finished_.clear();
  }

  void finish_thread() {
    std::lock_guard<std::mutex> lock(threads_mutex_);
    finished_.push_back(std::this_thread::get_id());
    --active_;
    threads_done_.notify_all();
  }

  // Waits until the whole A-ASSOCIATE-RQ is in the socket's receive buffer, so that dcmtk's read of it
  // (under the hand-over lock) never waits on a slow peer. False when it does not arrive in time.
  bool associate_request_arrived(int fd) {
    auto deadline = Clock::now() + std::chrono::seconds(options_.acse_timeout);
    size_t needed = 0;  // the PDU's whole length, once its header is there
    while (Clock::now() < deadline && running_) {
      struct pollfd pfd = {fd, POLLIN | POLLRDHUP, 0};
      ::poll(&pfd, 1, 50);
      int available = 0;
      if ((pfd.revents & (POLLERR | POLLNVAL)) || ::ioctl(fd, FIONREAD, &available) < 0) return false;
      if (needed == 0 && available >= 6) {
        unsigned char header[6];
        if (::recv(fd, header, 6, MSG_PEEK) != 6) return false;
        size_t length = (size_t(header[2]) << 24) | (size_t(header[3]) << 16) | (size_t(header[4]) << 8) | size_t(header[5]);
        needed = std::min<size_t>(6 + length, 64 * 1024);  // beyond that, dcmtk reads what follows under its own timeout
      }
      if (needed > 0 && static_cast<size_t>(available) >= needed) return true;
      if (pfd.revents & (POLLHUP | POLLRDHUP)) return false;  // closed before the request was whole
      // Part of the request is here (poll would report it again at once): wait for more without spinning.
      if (available > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  void serve_connection(int fd) {
    T_ASC_Association* assoc = nullptr;
    bool handed_over = false;
    if (associate_request_arrived(fd)) {
      std::lock_guard<std::mutex> lock(handover_mutex_);
      dcmExternalSocketHandle.set(fd);
      OFCondition cond = ASC_receiveAssociation(network_, &assoc, options_.max_pdu);
      dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
      handed_over = true;
      if (cond.bad()) {
        if (assoc != nullptr) {
          ASC_dropAssociation(assoc);  // closes the connection
          ASC_destroyAssociation(&assoc);
        }
        assoc = nullptr;
      }
    }
    if (!handed_over) ::close(fd);
    if (assoc != nullptr) run_association(assoc, fd);
    finish_thread();
  }

  static std::pair<std::string, int> peer_of(int fd) {
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (::getpeername(fd, reinterpret_cast<struct sockaddr*>(&peer), &len) == 0) {
      if (peer.ss_family == AF_INET) {
        auto* in = reinterpret_cast<struct sockaddr_in*>(&peer);
        ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
      } else if (peer.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&peer);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
      }
    }
    return {host, port};
  }

  void end_association(T_ASC_Association*& assoc, bool abort) {
    if (abort) ASC_abortAssociation(assoc);
    ASC_dropSCPAssociation(assoc);
    ASC_destroyAssociation(&assoc);
  }

  void run_association(T_ASC_Association* assoc, int fd) {
    auto [host, port] = peer_of(fd);
    std::string calling_ae = trimmed(assoc->params->DULparams.callingAPTitle);
    std::string called_ae = trimmed(assoc->params->DULparams.calledAPTitle);
    py::object token;
    {
      py::gil_scoped_acquire gil;
      try {
        token = handler_.attr("associate")(calling_ae, called_ae, host, port);
      } catch (py::error_already_set& exc) {
        exc.discard_as_unraisable("radpilot native store: associate");
        token = py::none();
      }
    }
    bool allowed;
    {
      py::gil_scoped_acquire gil;
      allowed = !token.is_none();
    }
    if (!allowed) {
      T_ASC_RejectParameters rej = {ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED};
      ASC_rejectAssociation(assoc, &rej);
      end_association(assoc, false);
      py::gil_scoped_acquire gil;
      token = py::object();
      return;
    }
    negotiate(assoc->params);
    ASC_setAPTitles(assoc->params, nullptr, nullptr, assoc->params->DULparams.calledAPTitle);
    if (ASC_acknowledgeAssociation(assoc).bad()) {
      end_association(assoc, false);
      call_ended(token, "acknowledge failed");
      return;
    }
    Watch watch_state;
    watch_state.fd = fd;
    watch_state.allowance_ms = int64_t(options_.network_timeout) * 1000;
    watch(&watch_state);
    std::string reason = serve_requests(assoc, token, &watch_state);
    unwatch(&watch_state);
    call_ended(token, reason);
  }

  void call_ended(py::object& token, const std::string& reason) {
    py::gil_scoped_acquire gil;
    try {
      handler_.attr("ended")(token, reason);
    } catch (py::error_already_set& exc) {
      exc.discard_as_unraisable("radpilot native store: ended");
    }
    token = py::object();
  }

  void negotiate(T_ASC_Parameters* params) {
    int count = ASC_countPresentationContexts(params);
    for (int i = 0; i < count; ++i) {
      T_ASC_PresentationContext pc;
      if (ASC_getPresentationContext(params, i, &pc).bad()) continue;
      if (sop_classes_.count(pc.abstractSyntax) == 0) {
        ASC_refusePresentationContext(params, pc.presentationContextID, ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
        continue;
      }
      bool accepted = false;
      for (int j = 0; j < pc.transferSyntaxCount && !accepted; ++j) {
        const char* syntax = pc.proposedTransferSyntaxes[j];
        bool known = transfer_syntaxes_.count(syntax) > 0 ||
                     (std::strcmp(pc.abstractSyntax, UID_VerificationSOPClass) == 0 &&
                      (std::strcmp(syntax, UID_LittleEndianImplicitTransferSyntax) == 0 ||
                       std::strcmp(syntax, UID_LittleEndianExplicitTransferSyntax) == 0));
        if (known) {
          accepted = ASC_acceptPresentationContext(params, pc.presentationContextID, syntax).good();
        }
      }
      if (!accepted) {
        ASC_refusePresentationContext(params, pc.presentationContextID, ASC_P_TRANSFERSYNTAXESNOTSUPPORTED);
      }
    }
  }

  // Answers requests until the peer releases or aborts; returns how the association ended.
  std::string serve_requests(T_ASC_Association* assoc, py::object& token, Watch* watch) {
    auto last_activity = Clock::now();
    std::string dataset_buffer;
    while (true) {
      T_ASC_PresentationContextID pres_id = 0;
      T_DIMSE_Message msg;
      std::memset(&msg, 0, sizeof(msg));
      watch->arm(1000);  // the poll's own second
      OFCondition cond = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, 1, &pres_id, &msg, nullptr);
      disarm(watch);
      auto now = Clock::now();
      if (cond == DIMSE_NODATAAVAILABLE) {
        double idle = std::chrono::duration<double>(now - last_activity).count();
        if (stopping_ && (idle > options_.idle_grace || now >= drain_deadline_)) {
          end_association(assoc, true);
          return "aborted at stop";
        }
        if (idle > options_.network_timeout) {
          end_association(assoc, true);
          return "network timeout";
        }
        continue;
      }
      if (cond == DUL_PEERREQUESTEDRELEASE) {
        ASC_acknowledgeRelease(assoc);
        end_association(assoc, false);
        return "released";
      }
      if (cond == DUL_PEERABORTEDASSOCIATION) {
        end_association(assoc, false);
        return "aborted by peer";
      }
      if (cond.bad()) {
        end_association(assoc, true);
        return std::string("receive failed: ") + cond.text();
      }
      if (msg.CommandField == DIMSE_C_ECHO_RQ) {
        cond = DIMSE_sendEchoResponse(assoc, pres_id, &msg.msg.CEchoRQ, STATUS_Success, nullptr);
      } else if (msg.CommandField == DIMSE_C_STORE_RQ) {
        std::string failure;
        cond = store(assoc, pres_id, msg.msg.CStoreRQ, token, failure, watch, dataset_buffer);
        if (!failure.empty()) {
          end_association(assoc, true);
          return failure;
        }
      } else {
        end_association(assoc, true);
        return "unsupported DIMSE command on a storage association";
      }
      if (cond.bad()) {
        end_association(assoc, true);
        return std::string("response failed: ") + cond.text();
      }
      last_activity = Clock::now();
    }
  }

  OFCondition store(T_ASC_Association* assoc, T_ASC_PresentationContextID pres_id, T_DIMSE_C_StoreRQ& request,
                    py::object& token, std::string& failure, Watch* watch, std::string& buffer) {
    BytesConsumer consumer(buffer, options_.max_dataset);
    BytesOutputStream stream(&consumer);
    T_ASC_PresentationContextID data_pres_id = pres_id;
    watch->arm();
    OFCondition cond = DIMSE_receiveDataSetInFile(assoc, DIMSE_NONBLOCKING, options_.network_timeout, &data_pres_id, &stream,
                                                  &Watch::progress, watch);
    disarm(watch);
    if (cond.bad() || data_pres_id != pres_id) {
      // Nothing reached the archive: a dataset cut short is never stored.
      failure = consumer.exceeded() ? "dataset larger than dicom_max_dataset_bytes" : std::string("dataset receive failed: ") + cond.text();
      return cond;
    }
    T_ASC_PresentationContext pc;
    ASC_findAcceptedPresentationContext(assoc->params, pres_id, &pc);
    unsigned status = STATUS_STORE_Refused_OutOfResources;
    std::string comment;
    {
      py::gil_scoped_acquire gil;
      try {
        std::string sop_class(request.AffectedSOPClassUID), sop_instance(request.AffectedSOPInstanceUID);
        // The Part 10 file is assembled in the one bytes object the archive receives: one copy of the dataset.
        std::string header = handler_.attr("file_header")(sop_class, sop_instance, std::string(pc.acceptedTransferSyntax))
                                 .cast<std::string>();
        py::bytes data = py::reinterpret_steal<py::bytes>(
            PyBytes_FromStringAndSize(nullptr, static_cast<py::ssize_t>(header.size() + buffer.size())));
        if (!data) throw py::error_already_set();
        char* target = PyBytes_AS_STRING(data.ptr());
        std::memcpy(target, header.data(), header.size());
        std::memcpy(target + header.size(), buffer.data(), buffer.size());
        py::tuple result = handler_.attr("store")(token, sop_class, sop_instance, data);
        status = result[0].cast<unsigned>();
        comment = result[1].cast<std::string>();
      } catch (py::error_already_set& exc) {
        comment = std::string("storage error: ") + exc.what();
        exc.discard_as_unraisable("radpilot native store: store");
      }
    }
    if (buffer.capacity() > KEPT_BUFFER_LIMIT) std::string().swap(buffer);
    T_DIMSE_C_StoreRSP response;
    std::memset(&response, 0, sizeof(response));
    response.MessageIDBeingRespondedTo = request.MessageID;
    response.DimseStatus = static_cast<DIC_US>(status);
    response.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(response.AffectedSOPClassUID, request.AffectedSOPClassUID, sizeof(response.AffectedSOPClassUID));
    OFStandard::strlcpy(response.AffectedSOPInstanceUID, request.AffectedSOPInstanceUID, sizeof(response.AffectedSOPInstanceUID));
    response.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    std::unique_ptr<DcmDataset> detail;
    if (!comment.empty()) {
      detail.reset(new DcmDataset());
      detail->putAndInsertString(DCM_ErrorComment, comment.c_str());
    }
    return DIMSE_sendStoreResponse(assoc, pres_id, &request, &response, detail.get());
  }

  int listen_fd_;
  Options options_;
  py::object handler_;
  std::set<std::string> sop_classes_;
  std::set<std::string> transfer_syntaxes_;
  T_ASC_Network* network_ = nullptr;
  std::atomic<bool> running_{false};
  std::atomic<bool> stopping_{false};
  Clock::time_point drain_deadline_ = Clock::time_point::max();
  std::thread accept_thread_;
  std::thread watchdog_thread_;
  std::atomic<bool> watchdog_running_{true};
  std::mutex watch_mutex_;
  std::set<Watch*> watches_;
  std::mutex handover_mutex_;
  std::mutex threads_mutex_;
  std::condition_variable threads_done_;
  std::vector<std::thread> workers_;
  std::vector<std::thread::id> finished_;
  std::atomic<int> active_{0};
};

}  // namespace

PYBIND11_MODULE(_dcmtk_store, m) {
  m.doc() = "C-STORE receiver on dcmtk's network layer; see radpilot.pacs.native_store";
  // dcmtk logs to stderr by default; RadPilot logs associations itself.
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  dcmDisableGethostbyaddr.set(OFTrue);
  py::class_<Options>(m, "Options")
      .def(py::init<>())
      .def_readwrite("ae_title", &Options::ae_title)
      .def_readwrite("sop_classes", &Options::sop_classes)
      .def_readwrite("transfer_syntaxes", &Options::transfer_syntaxes)
      .def_readwrite("max_pdu", &Options::max_pdu)
      .def_readwrite("acse_timeout", &Options::acse_timeout)
      .def_readwrite("network_timeout", &Options::network_timeout)
      .def_readwrite("max_dataset", &Options::max_dataset)
      .def_readwrite("idle_grace", &Options::idle_grace);
  py::class_<StoreReceiver>(m, "StoreReceiver")
      .def(py::init<int, Options, py::object>(), py::arg("listen_fd"), py::arg("options"), py::arg("handler"))
      .def("start", &StoreReceiver::start)
      .def("stop", &StoreReceiver::stop, py::arg("drain_s"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("active", &StoreReceiver::active);
  m.attr("MAX_PDU") = ASC_MAXIMUMPDUSIZE;
}
