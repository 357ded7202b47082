/* Read-aloud: a [data-speak] button reads the sentence the server put in the data-speak-text
 * attribute of its box, with the browser's speech synthesis, in data-speak-lang (else the page's
 * language), with a voice of exactly that language when the device has one (zh-CN, not a
 * Cantonese or Taiwanese voice). A [data-speak-stop] button stops it. The box stays hidden where
 * the browser cannot speak. Plain ES5 without modules: it runs in WeChat's X5 and old WebViews.
 */
(function () {
  "use strict";

  var synth = window.speechSynthesis;
  if (!synth || typeof synth.speak !== "function" || typeof window.SpeechSynthesisUtterance !== "function") {
    return;
  }

  // "zh_CN", "zh-cn" and Android's "cmn-Hans-CN" all name the same language.
  function normalise(lang) {
    var value = String(lang || "").toLowerCase().replace(/_/g, "-");
    return value === "cmn-hans-cn" ? "zh-cn" : value;
  }

  function voiceFor(lang) {
    var voices = typeof synth.getVoices === "function" ? synth.getVoices() || [] : [];
    var wanted = normalise(lang);
    var fallback = null;
    for (var i = 0; i < voices.length; i++) {
      if (normalise(voices[i].lang) === wanted) {
        if (voices[i].localService) {
          return voices[i]; // works offline, starts at once
        }
        fallback = fallback || voices[i];
      }
    }
    return fallback;
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-speak-text]"), function (box) {
    var start = box.querySelector("[data-speak]");
    var stop = box.querySelector("[data-speak-stop]");
    if (!start) {
      return;
    }
    var lang = box.getAttribute("data-speak-lang") || document.documentElement.lang || "zh-CN";

    function speaking(on) {
      if (stop) {
        stop.hidden = !on;
      }
    }

    start.addEventListener("click", function () {
      synth.cancel(); // a second tap starts again instead of queueing a second reading
      var utterance = new window.SpeechSynthesisUtterance(box.getAttribute("data-speak-text"));
      utterance.lang = lang;
      var voice = voiceFor(lang);
      if (voice) {
        utterance.voice = voice;
      }
      utterance.rate = 0.9; // a little slower than usual, for older listeners
      utterance.onend = function () { speaking(false); };
      utterance.onerror = function () { speaking(false); };
      speaking(true);
      synth.speak(utterance);
    });
    if (stop) {
      stop.addEventListener("click", function () {
        synth.cancel();
        speaking(false);
      });
    }
    box.hidden = false;
  });

  // Leaving the page stops the reading; asking for the voices once makes Chrome load them.
  window.addEventListener("pagehide", function () { synth.cancel(); });
  if (typeof synth.getVoices === "function") {
    synth.getVoices();
  }
})();
