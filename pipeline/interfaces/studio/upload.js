() => {
  // Gradio's image box refuses a file whose type is not image/* in the browser itself, with a message that
  // names no box, shown twice (two checks). Relabelled as an image, such a file reaches check_upload, which
  // says once what is wrong with it and which box it was dropped on. Runs on page load (launch(js=...)).
  const boxes = "#image, #ref_image, #mask";
  const relabelled = (files) => {
    const transfer = new DataTransfer();
    for (const file of files) {
      transfer.items.add(file.type.startsWith("image/") ? file
                         : new File([file], file.name, {type: "image/x-unchecked"}));
    }
    return transfer;
  };
  const unchecked = (files) => [...files].some((file) => !file.type.startsWith("image/"));
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === "file" && input.closest(boxes)
        && unchecked(input.files)) {
      input.files = relabelled(input.files).files;
    }
  }, true);
  document.addEventListener("drop", (event) => {
    const box = event.target instanceof Element ? event.target.closest(boxes) : null;
    if (!box || !event.dataTransfer || !unchecked(event.dataTransfer.files)) return;
    event.stopImmediatePropagation();
    event.preventDefault();
    event.target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true,
                                                      dataTransfer: relabelled(event.dataTransfer.files)}));
  }, true);
  document.body.dataset.uploadChecks = "on";  // for the browser tests: the listeners above are in place
}
