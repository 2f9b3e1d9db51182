var w={pending:"var(--jp-layout-color3, #bdbdbd)",running:"var(--jp-brand-color1, #1976d2)",finished:"var(--jp-success-color1, #388e3c)",failed:"var(--jp-error-color1, #d32f2f)",cancelled:"var(--jp-warn-color1, #f57c00)"};function x(e,s,t){let n=structuredClone(e.get("snapshot")||{seq:0}),a=0,i=()=>{let d=e.get("snapshot");d&&d.seq>=n.seq&&(n=structuredClone(d),t(n,!0))},c=(d,f)=>{!d||d.kind!=="delta"||(d.base===n.seq?(s(n,d,f||[]),n.seq=d.seq,t(n,!1)):d.seq>n.seq&&Date.now()-a>1e3&&(a=Date.now(),e.send({kind:"resync"})))};return e.on("change:snapshot",i),e.on("msg:custom",c),t(n,!0),()=>{e.off("change:snapshot",i),e.off("msg:custom",c)}}function u(e,s){if(document.getElementById(e))return;let t=document.createElement("style");t.id=e,t.textContent=s,document.head.appendChild(t)}var m=`
.nbc-widget { font-family: var(--jp-ui-font-family, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, #222);
  padding: 4px 0; }
.nbc-title { font-weight: 600; margin-bottom: 4px; }
.nbc-muted { color: var(--jp-ui-font-color2, #666); }
.nbc-widget table { border-collapse: collapse; }
.nbc-widget th { text-align: left; font-weight: 600; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); }
.nbc-widget td { padding: 2px 8px; }
.nbc-bar { display: flex; height: 10px; border-radius: 3px; overflow: hidden;
  background: var(--jp-layout-color2, #eee); }
.nbc-button { font: inherit; color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color2, #eee); border: 1px solid var(--jp-border-color1, #bbb);
  border-radius: 3px; padding: 1px 10px; cursor: pointer; }
.nbc-button:disabled { opacity: 0.5; cursor: default; }
.nbc-error { color: var(--jp-error-color1, #d32f2f); white-space: pre-wrap; }
`;function o(e,s={},...t){let n=document.createElement(e);for(let[a,i]of Object.entries(s))i!=null&&(a==="class"?n.className=String(i):a==="style"?n.setAttribute("style",String(i)):a.startsWith("on")?n[a]=i:n.setAttribute(a,String(i)));for(let a of t)n.append(a);return n}function y(e,s=240){let t=o("div",{class:"nbc-bar",style:`width:${s}px`});for(let[n,a]of e)a<=0||t.append(o("div",{"data-state":n,style:`width:${(a*100).toFixed(2)}%;background:${w[n]||n}`}));return t}function b(e){return e==null||!isFinite(e)?"–":e<60?`${e.toFixed(1)} s`:e<3600?`${Math.floor(e/60)} min ${Math.floor(e%60)} s`:`${Math.floor(e/3600)} h ${Math.floor(e%3600/60)} min`}var $=`
.nbc-progress .nbc-row td { vertical-align: middle; }
.nbc-progress .nbc-foot { margin-top: 4px; display: flex; gap: 12px; align-items: center; }
`;function M(e,s,t){let n=t.rows||[],a=o("table",{},o("thead",{},o("tr",{},...["function","","done","queued","running","failed"].map(r=>o("th",{},r))))),i=o("tbody");for(let r of n){let l=Math.max(1,r.total),h=r.finished+r.failed+r.cancelled;i.append(o("tr",{class:"nbc-row","data-name":r.name,"data-percent":Math.round(100*h/l)},o("td",{},r.name),o("td",{},y([["finished",r.finished/l],["failed",r.failed/l],["cancelled",r.cancelled/l],["running",r.running/l],["pending",r.pending/l]])),o("td",{class:"nbc-count"},`${h}/${r.total}`),o("td",{},String(r.pending)),o("td",{},String(r.running)),o("td",{},String(r.failed+r.cancelled))))}a.append(i);let c=t.total||0,d=t.ended||0,f=c?Math.round(100*d/c):0,p=o("button",{class:"nbc-button nbc-cancel"},"Cancel");p.disabled=!!t.done||!!t.cancel_requested,p.onclick=()=>{p.disabled=!0,s.send({kind:"cancel"})};let v=t.done?`done in ${b(t.elapsed)}`:`${(t.rate||0).toFixed(1)} tasks/s · ETA ${b(t.eta)}`,S=o("div",{class:"nbc-foot"},o("span",{class:"nbc-summary"},`${d}/${c} tasks (${f}%)`),o("span",{class:"nbc-muted"},t.cancel_requested&&!t.done?"cancelling…":v),p),g=[o("div",{class:"nbc-title"},`Progress: ${t.title||""}`),a,S];t.error&&g.push(o("div",{class:"nbc-error"},`first error: ${t.error}`)),e.dataset.percent=String(f),e.dataset.done=t.done?"true":"false",e.replaceChildren(...g)}function j({model:e,el:s}){u("nbc-base-css",m),u("nbc-progress-css",$);let t=o("div",{class:"nbc-widget nbc-progress"});return s.append(t),x(e,()=>{},n=>M(t,e,n))}var T={render:j};export{T as default};
