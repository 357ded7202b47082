/* Camera QR scanning for forms marked data-scan-form (the shop counter's card field).
 *
 * [data-scan-start] opens the rear camera in [data-scan-view], decodes a few frames a second
 * (BarcodeDetector where the browser has one for QR codes, else the vendored jsQR), puts the first
 * result into the input named by data-scan-target and submits the form. Typing the code, or a
 * USB/handheld scanner typing it and pressing Enter, needs none of this and keeps working.
 * Messages come from the data-msg-* attributes of [data-scan-messages], in the page's language.
 * Plain ES2017 without modules: it runs in WeChat's X5 and old Android WebViews.
 */
(function () {
  "use strict";

  var INTERVAL_MS = 125; // at most ~8 decodes a second
  var MAX_SIDE = 400; // jsQR frames are downscaled to this so an old phone keeps up

  function message(name) {
    var box = document.querySelector("[data-scan-messages]");
    return (box && box.getAttribute("data-msg-" + name)) || "";
  }

  function hasCamera() {
    return !!(navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function");
  }

  // Browsers hide getUserMedia outside a secure context (HTTPS or localhost); the button still
  // shows there so that clicking it can say why the camera is unavailable.
  function insecure() {
    return window.isSecureContext === false;
  }

  // Resolve to a function(video) -> Promise<string|null> that decodes one frame.
  function makeDecoder() {
    var Detector = window.BarcodeDetector;
    var formats =
      Detector && typeof Detector.getSupportedFormats === "function"
        ? Detector.getSupportedFormats().catch(function () {
            return [];
          })
        : Promise.resolve(Detector ? ["qr_code"] : []);
    return formats.then(function (supported) {
      if (supported.indexOf("qr_code") !== -1) {
        var detector = new Detector({ formats: ["qr_code"] });
        return function (video) {
          return detector.detect(video).then(function (codes) {
            return codes.length ? codes[0].rawValue : null;
          });
        };
      }
      var canvas = document.createElement("canvas");
      var context = canvas.getContext("2d", { willReadFrequently: true });
      return function (video) {
        var scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
        var width = Math.round(video.videoWidth * scale);
        var height = Math.round(video.videoHeight * scale);
        var jsQR = window.jsQR && (window.jsQR.default || window.jsQR);
        if (!width || !height || typeof jsQR !== "function") {
          return Promise.resolve(null);
        }
        canvas.width = width;
        canvas.height = height;
        context.drawImage(video, 0, 0, width, height);
        var found = jsQR(context.getImageData(0, 0, width, height).data, width, height, {
          inversionAttempts: "dontInvert",
        });
        return Promise.resolve(found && found.data ? found.data : null);
      };
    });
  }

  function errorMessage(error) {
    var name = (error && error.name) || "";
    var refused = name === "NotAllowedError" || name === "PermissionDeniedError";
    if (name === "SecurityError" || (refused && insecure())) {
      return message("insecure");
    }
    if (refused) {
      return message("denied");
    }
    return message("nocamera"); // NotFoundError, NotReadableError, OverconstrainedError, ...
  }

  function Scanner(start) {
    this.start = start;
    this.form = start.closest("form");
    this.view = this.form.querySelector("[data-scan-view]");
    this.video = this.view.querySelector("video");
    this.status = this.view.querySelector("[data-scan-status]");
    this.input =
      document.getElementById(start.getAttribute("data-scan-target")) ||
      this.form.querySelector('input[name="code"]');
    this.stream = null;
    this.timer = null;
    this.session = 0; // bumped by stop(), so a late camera or decode result is dropped
  }

  Scanner.prototype.say = function (text) {
    this.status.textContent = text;
  };

  Scanner.prototype.open = function () {
    var self = this;
    var session = ++this.session;
    this.view.hidden = false;
    this.start.hidden = true;
    if (!hasCamera()) {
      this.fail(message(insecure() ? "insecure" : "nocamera"));
      return;
    }
    this.say(message("looking"));
    navigator.mediaDevices
      .getUserMedia({ video: { facingMode: "environment" }, audio: false })
      .then(function (stream) {
        if (session !== self.session) {
          stopTracks(stream);
          return;
        }
        self.stream = stream;
        self.video.muted = true;
        self.video.setAttribute("playsinline", "");
        self.video.srcObject = stream;
        var playing = self.video.play();
        return Promise.all([makeDecoder(), playing]).then(function (results) {
          if (session === self.session) {
            self.loop(results[0], session);
          }
        });
      })
      .catch(function (error) {
        if (session === self.session) {
          self.release();
          self.fail(errorMessage(error));
        }
      });
  };

  Scanner.prototype.loop = function (decode, session) {
    var self = this;
    var began = Date.now();
    var frame = Promise.resolve(null);
    if (this.video.readyState >= 2) {
      // HAVE_CURRENT_DATA: there is a frame to look at
      try {
        frame = decode(this.video);
      } catch (error) {
        // a synchronous failure (jsQR) is treated like an asynchronous one below
      }
    }
    frame
      .catch(function () {
        return null; // one bad frame is not fatal: try the next
      })
      .then(function (text) {
        if (session !== self.session) {
          return;
        }
        if (text) {
          self.found(text);
          return;
        }
        var wait = Math.max(0, INTERVAL_MS - (Date.now() - began));
        self.timer = setTimeout(function () {
          self.loop(decode, session);
        }, wait);
      });
  };

  Scanner.prototype.found = function (text) {
    this.stop();
    this.input.value = text;
    this.input.dispatchEvent(new Event("input", { bubbles: true }));
    if (typeof this.form.requestSubmit === "function") {
      this.form.requestSubmit();
    } else {
      this.form.submit();
    }
  };

  // Show an error; the view stays open so it can be read, and the typed-code path stays usable.
  Scanner.prototype.fail = function (text) {
    this.say(text);
    this.input.focus();
  };

  Scanner.prototype.release = function () {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stream) {
      stopTracks(this.stream);
      this.stream = null;
    }
    this.video.pause();
    this.video.srcObject = null;
  };

  Scanner.prototype.stop = function () {
    this.session++;
    this.release();
    this.view.hidden = true;
    this.start.hidden = false;
    this.say("");
  };

  function stopTracks(stream) {
    stream.getTracks().forEach(function (track) {
      track.stop();
    });
  }

  function init() {
    var buttons = document.querySelectorAll("form[data-scan-form] [data-scan-start]");
    Array.prototype.forEach.call(buttons, function (start) {
      if (!hasCamera() && !insecure()) {
        return; // no camera API at all: the typed code is the only way, so no button
      }
      var scanner = new Scanner(start);
      start.hidden = false;
      start.addEventListener("click", function () {
        scanner.open();
      });
      var stop = scanner.view.querySelector("[data-scan-stop]");
      if (stop) {
        stop.addEventListener("click", function () {
          scanner.stop();
          scanner.input.focus();
        });
      }
      // Leaving the page (or putting it in the back/forward cache) releases the camera.
      window.addEventListener("pagehide", function () {
        if (!scanner.view.hidden) {
          scanner.stop();
        }
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
