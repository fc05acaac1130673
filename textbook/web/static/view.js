// Jump the video player to a clip or keyframe time without reloading the page.
// Without this script the same links reload the page with the player starting there.
document.addEventListener("click", function (event) {
  var link = event.target.closest ? event.target.closest("a[data-seek]") : null;
  var player = document.getElementById("player");
  if (!link || !player) { return; }
  event.preventDefault();
  player.currentTime = parseFloat(link.getAttribute("data-seek")) || 0;
  player.scrollIntoView({ block: "center" });
  player.play();
});
